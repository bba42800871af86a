"""An in-memory queue with Azure Storage Queue semantics, for tests and the local host."""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shared.queues.port import ReceivedMessage


@dataclass
class _Stored:
    id: str
    text: str
    visible_at: float
    dequeue_count: int = 0
    receipt: str = ""
    sent_at: float = field(default_factory=time.time)  # wall clock: an age an operator reads


class InMemoryQueues:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._queues: dict[str, list[_Stored]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def send(self, queue: str, text: str, *, delay: float = 0) -> None:
        with self._lock:
            self._queues.setdefault(queue, []).append(_Stored(str(next(self._ids)), text, self.clock() + delay))

    def send_many(self, queue: str, texts: Sequence[str]) -> None:
        for text in texts:  # through send: a subclass that fails sends fails these too
            self.send(queue, text)

    def receive(self, queue: str, *, max_messages: int, visibility_timeout: float) -> list[ReceivedMessage]:
        now, out = self.clock(), list[ReceivedMessage]()
        with self._lock:
            for stored in self._queues.get(queue, []):
                if len(out) >= max_messages:
                    break
                if stored.visible_at <= now:
                    stored.visible_at = now + visibility_timeout
                    stored.dequeue_count += 1
                    stored.receipt = str(next(self._ids))
                    out.append(ReceivedMessage(stored.id, stored.receipt, stored.text, stored.dequeue_count))
        return out

    def delete(self, queue: str, message: ReceivedMessage) -> None:
        with self._lock:
            items = self._queues.get(queue, [])
            # Only the holder of the latest receipt may delete, as with Azure's pop receipts.
            self._queues[queue] = [s for s in items if not (s.id == message.id and s.receipt == message.receipt)]

    def release(self, queue: str, message: ReceivedMessage, *, delay: float) -> None:
        with self._lock:
            for stored in self._queues.get(queue, []):
                if stored.id == message.id and stored.receipt == message.receipt:
                    stored.visible_at = self.clock() + delay

    def pending(self, queue: str) -> list[tuple[str, float]]:
        """Every message of the queue, visible or not: (text, seconds until it is visible, 0 if
        now). What a test asks of a delayed send; a consumer receives instead."""
        now = self.clock()
        with self._lock:
            return [(s.text, max(s.visible_at - now, 0.0)) for s in self._queues.get(queue, [])]

    def count(self, queue: str) -> int:
        with self._lock:
            return len(self._queues.get(queue, []))

    def oldest_age(self, queue: str) -> float | None:
        with self._lock:
            items = self._queues.get(queue, [])
            return time.time() - min(s.sent_at for s in items) if items else None
