"""The queue port: what the engine and the local host need of a queue, and the poison rule.

Semantics are Azure Storage Queues': a received message is invisible for a visibility timeout,
deleted when handled, and seen again (dequeue_count + 1) when not. After ``max_dequeue_count``
attempts it moves to ``<queue>-poison``, as the Functions host does per host.json.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ReceivedMessage:
    id: str
    receipt: str
    text: str
    dequeue_count: int


class QueuePort(Protocol):
    def send(self, queue: str, text: str, *, delay: float = 0) -> None: ...

    def send_many(self, queue: str, texts: Sequence[str]) -> None:
        """Send every text, or raise. After an error some may have been sent: the caller answers
        so that the sender retries, and the repeats are harmless (the apply is idempotent)."""
        ...

    def receive(self, queue: str, *, max_messages: int, visibility_timeout: float) -> list[ReceivedMessage]: ...

    def delete(self, queue: str, message: ReceivedMessage) -> None: ...

    def release(self, queue: str, message: ReceivedMessage, *, delay: float) -> None:
        """Make a received message visible again after ``delay`` seconds (a failed attempt)."""
        ...

    def count(self, queue: str) -> int: ...

    def oldest_age(self, queue: str) -> float | None:
        """Seconds the oldest waiting message has been in the queue; None when it is empty."""
        ...


def poison_name(queue: str) -> str:
    return f"{queue}-poison"


def pump_once(port: QueuePort, queue: str, handle: Callable[[ReceivedMessage], None], *, max_dequeue_count: int,
              visibility_timeout: float = 30, max_messages: int = 16,
              retry_delay: float | None = None) -> tuple[int, int, int]:
    """Receive a batch and handle each message in turn: (handled, failed, poisoned).

    ``visibility_timeout`` hides a message while it is handled; see ``settle`` for the rest.
    """
    outcomes = [settle(port, queue, message, handle, max_dequeue_count=max_dequeue_count, retry_delay=retry_delay)
                for message in port.receive(queue, max_messages=max_messages, visibility_timeout=visibility_timeout)]
    return outcomes.count("handled"), outcomes.count("failed"), outcomes.count("poisoned")


def settle(port: QueuePort, queue: str, message: ReceivedMessage, handle: Callable[[ReceivedMessage], None], *,
           max_dequeue_count: int, retry_delay: float | None = None) -> str:
    """Handle one received message: ``handled`` (deleted), ``failed`` or ``poisoned``.

    A message whose handler raises stays on the queue and reappears after ``retry_delay``
    (host.json's visibilityTimeout) or, when that is None, when its visibility lapses; the attempt
    that reaches ``max_dequeue_count`` moves it to the poison queue.
    """
    try:
        handle(message)
    except Exception:
        if message.dequeue_count >= max_dequeue_count:
            port.send(poison_name(queue), message.text)
            port.delete(queue, message)
            return "poisoned"
        if retry_delay is not None:
            port.release(queue, message, delay=retry_delay)
        return "failed"
    port.delete(queue, message)
    return "handled"
