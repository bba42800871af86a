"""Azure Storage Queues through azure-storage-queue: Azurite locally (a connection string),
Azure with the app's managed identity (shared keys are disabled on the account).

The message text goes as is (no base64): host.json says ``messageEncoding: none``, and
tests/integration/test_queues.py proves producer and host agree.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.request import getproxies

import requests
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.queue import QueueServiceClient

from shared.queues.port import ReceivedMessage

# Messages of one delivery sent at once: a 40-event notification took 40 round trips in turn
# (seconds under load, past a sender's timeout); the transport's pool holds 10 connections.
SEND_CONCURRENCY = 8


class AzureQueues:
    def __init__(self, service: QueueServiceClient, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.service, self.clock = service, clock
        self._clients: dict[str, Any] = {}
        self._senders: ThreadPoolExecutor | None = None

    @classmethod
    def from_connection_string(cls, connection_string: str, *,
                               clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> AzureQueues:
        return cls(QueueServiceClient.from_connection_string(connection_string, transport=_transport()), clock=clock)

    @classmethod
    def from_identity(cls, account_url: str, credential: Any, *, ca_bundle: str | None = None) -> AzureQueues:
        """Azure: the queue endpoint and an Entra credential (the app's managed identity).
        ``ca_bundle``: certificates to trust instead of the system's (an emulator's own)."""
        return cls(QueueServiceClient(account_url, credential=credential, transport=_transport(ca_bundle)))

    def _queue(self, name: str) -> Any:
        client = self._clients.get(name)
        if client is None:
            client = self.service.get_queue_client(name)  # no encode/decode policy: text as is
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
            self._clients[name] = client
        return client

    def send(self, queue: str, text: str, *, delay: float = 0) -> None:
        self._queue(queue).send_message(text, visibility_timeout=int(delay) or None)

    def send_many(self, queue: str, texts: Sequence[str]) -> None:
        """Up to SEND_CONCURRENCY sends in flight (the SDK's clients are thread-safe); the first
        error is raised once every send has ended."""
        if len(texts) <= 1:
            for text in texts:
                self.send(queue, text)
            return
        client = self._queue(queue)  # created here, not by the pool's threads at once
        if self._senders is None:
            self._senders = ThreadPoolExecutor(SEND_CONCURRENCY, thread_name_prefix="queue-send")
        futures = [self._senders.submit(client.send_message, text) for text in texts]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error

    def receive(self, queue: str, *, max_messages: int, visibility_timeout: float) -> list[ReceivedMessage]:
        if max_messages < 1:
            return []
        # One round trip: the first page only (iterating the pager would keep polling).
        pager = self._queue(queue).receive_messages(messages_per_page=max_messages, max_messages=max_messages,
                                                    visibility_timeout=max(int(visibility_timeout), 1))
        page: Iterable[Any] = next(pager.by_page(), [])
        return [ReceivedMessage(m.id, m.pop_receipt, m.content, m.dequeue_count) for m in page]

    def delete(self, queue: str, message: ReceivedMessage) -> None:
        # Already gone: its visibility lapsed and another consumer finished it.
        with contextlib.suppress(ResourceNotFoundError):
            self._queue(queue).delete_message(message.id, message.receipt)

    def release(self, queue: str, message: ReceivedMessage, *, delay: float) -> None:
        # Its visibility lapsed first: it is visible again already.
        with contextlib.suppress(ResourceNotFoundError):
            self._queue(queue).update_message(message.id, message.receipt, visibility_timeout=int(delay))

    def count(self, queue: str) -> int:
        return self._queue(queue).get_queue_properties().approximate_message_count

    def oldest_age(self, queue: str) -> float | None:
        """Seconds since the first visible message was enqueued (peek: messages being handled
        are not seen, so this is the oldest waiting one)."""
        peeked = self._queue(queue).peek_messages(max_messages=1)
        if not peeked or peeked[0].inserted_on is None:
            return None
        return (self.clock() - peeked[0].inserted_on).total_seconds()


def _transport(ca_bundle: str | None = None) -> RequestsTransport:
    """The SDK's own transport over a session that reads proxy settings once, now: by default
    requests scans the whole environment for them on every call (~0.6 ms of CPU per message,
    a tenth of a webhook's acknowledgement). HTTP(S)_PROXY/NO_PROXY set before start still apply."""
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(getproxies())
    if ca_bundle:  # the transport passes its own verify setting with every request
        return RequestsTransport(session=session, session_owner=True, connection_verify=ca_bundle)
    return RequestsTransport(session=session, session_owner=True)
