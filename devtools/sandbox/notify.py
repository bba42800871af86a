"""Webhook notifications from the sandbox, as a real source would send them.

Only the events Halaxy fires are sent: Patient create/update, Appointment and Invoice
create/update/delete (Practitioner changes and Patient deletes must be polled). One endpoint per
event type: ``{event}`` in the URL becomes e.g. ``appointment-update``. Bodies carry ids, never
resource content. Delivery runs on a background thread and retries failures with backoff; every
attempt lands in a log the tests read back (``GET /_sandbox/deliveries``).
"""
from __future__ import annotations

import ipaddress
import json
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from devtools.sandbox.data import Change, _instant
from shared.webhooks.signatures import hmac_sha256_hex, standard_webhooks_signature

FIRING = {("Patient", "create"), ("Patient", "update"), ("Appointment", "create"), ("Appointment", "update"),
          ("Appointment", "delete"), ("Invoice", "create"), ("Invoice", "update"), ("Invoice", "delete")}
BACKPORT_STATUS_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"


def require_loopback(url: str) -> str:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if urlsplit(url).scheme not in ("http", "https") or not loopback:
        raise ValueError("the sandbox only delivers webhooks to this machine (127.0.0.1, localhost or ::1)")
    return url


@dataclass
class WebhookConfig:
    url: str  # may contain {event}
    scheme: str  # halaxy | hmac-sha256 | standard-webhooks
    secret: str
    header: str = ""  # halaxy: the static secret's header; hmac-sha256: the signature's header
    max_attempts: int = 6
    backoff: float = 0.2
    # Misbehaviour, for the fault harness: send every notification ``repeat`` times, leave out a
    # share of them (``drop_rate``: never sent, status "dropped"), send each batch of changes in
    # shuffled order, and send from ``senders`` threads at once (which reorders too).
    repeat: int = 1
    drop_rate: float = 0.0
    shuffle: bool = False
    senders: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        require_loopback(self.url.replace("{event}", "e"))
        if self.scheme not in ("halaxy", "hmac-sha256", "standard-webhooks"):
            raise ValueError(f"unknown webhook scheme {self.scheme!r}")
        self.header = self.header or {"halaxy": "X-Webhook-Secret", "hmac-sha256": "X-Webhook-Signature"}.get(
            self.scheme, "")


@dataclass
class Delivery:
    event: str
    type: str
    id: str
    action: str
    version: str
    event_number: int
    attempts: int = 0
    copies: int = 0  # copies sent (more than one with WebhookConfig.repeat)
    status: str = "pending"  # pending | delivered | failed | dropped
    last_status: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def event_name(change: Change) -> str:
    return f"{change.type.lower()}-{change.action}"


def halaxy_bundle(change: Change, base_url: str, event_number: int) -> dict[str, Any]:
    """A FHIR Subscriptions Backport (R4) id-only notification for one event."""
    event = event_name(change)
    subscription = f"{base_url}/Subscription/sub-{event}"
    status = {"resourceType": "Parameters", "meta": {"profile": [BACKPORT_STATUS_PROFILE]}, "parameter": [
        {"name": "subscription", "valueReference": {"reference": subscription}},
        {"name": "topic", "valueCanonical": f"{base_url}/SubscriptionTopic/{event}"},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": "event-notification"},
        {"name": "events-since-subscription-start", "valueString": str(event_number)},
        {"name": "notification-event", "part": [
            {"name": "event-number", "valueString": str(event_number)},
            {"name": "timestamp", "valueInstant": _instant(change.at)},
            {"name": "focus", "valueReference": {"reference": f"{change.type}/{change.id}"}},
        ]},
    ]}
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "history", "timestamp": _instant(change.at),
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": status,
                       "request": {"method": "GET", "url": f"{subscription}/$status"}, "response": {"status": "200"}}]}


def json_event(change: Change) -> dict[str, Any]:
    return {"event": f"{change.type.lower()}.{change.action}", "type": f"{change.type.lower()}.{change.action}",
            "timestamp": _instant(change.at),
            "data": {"resourceType": change.type, "id": change.id, "versionId": str(change.version)}}


class Notifier:
    def __init__(self, config: WebhookConfig, base_url: str) -> None:
        self.config, self.base_url = config, base_url
        self.log: list[Delivery] = []
        self._numbers: dict[str, int] = {}
        self._queue: queue.Queue[tuple[Delivery, bytes, dict[str, str]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._threads = [threading.Thread(target=self._run, name=f"sandbox-webhooks-{n}", daemon=True)
                         for n in range(max(config.senders, 1))]
        for thread in self._threads:
            thread.start()

    def notify(self, changes: list[Change]) -> None:
        firing = [c for c in changes if (c.type, c.action) in FIRING]
        with self._lock:
            numbered = []
            for change in firing:  # event numbers follow the changes, whatever the sending order
                event = event_name(change)
                number = self._numbers[event] = self._numbers.get(event, 0) + 1
                numbered.append((change, event, number))
            if self.config.shuffle:
                self._rng.shuffle(numbered)
        for change, event, number in numbered:
            with self._lock:
                dropped = self.config.drop_rate > 0 and self._rng.random() < self.config.drop_rate
                delivery = Delivery(event, change.type, change.id, change.action, str(change.version), number,
                                    status="dropped" if dropped else "pending")
                self.log.append(delivery)
            if dropped:
                continue
            body, headers = self._render(change, number)
            for _ in range(max(self.config.repeat, 1)):
                self._queue.put((delivery, body, headers))

    def _render(self, change: Change, number: int) -> tuple[bytes, dict[str, str]]:
        config = self.config
        payload = halaxy_bundle(change, self.base_url, number) if config.scheme == "halaxy" else json_event(change)
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/fhir+json" if config.scheme == "halaxy" else "application/json"}
        if config.scheme == "halaxy":
            headers[config.header] = config.secret
        elif config.scheme == "hmac-sha256":
            headers[config.header] = hmac_sha256_hex(config.secret, body)
        else:
            msg_id, stamp = f"msg_{uuid.uuid4().hex}", int(time.time())
            headers.update({"webhook-id": msg_id, "webhook-timestamp": str(stamp),
                            "webhook-signature": standard_webhooks_signature(config.secret, msg_id, stamp, body)})
        return body, headers

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while (item := self._queue.get()) is not None:
                delivery, body, headers = item
                url = self.config.url.replace("{event}", delivery.event)
                for attempt in range(self.config.max_attempts):
                    delivery.attempts = attempt + 1
                    try:
                        delivery.last_status = http.post(url, content=body, headers=headers).status_code
                    except httpx.TransportError:
                        delivery.last_status = None
                    if delivery.last_status is not None and 200 <= delivery.last_status < 300:
                        break
                    time.sleep(self.config.backoff * 2 ** attempt)
                with self._lock:  # with repeats, one delivered copy is enough
                    delivered = delivery.last_status is not None and 200 <= delivery.last_status < 300
                    delivery.copies += 1
                    if delivered:
                        delivery.status = "delivered"
                    elif delivery.copies >= max(self.config.repeat, 1) and delivery.status == "pending":
                        delivery.status = "failed"
                self._queue.task_done()

    def drain(self, timeout: float = 30) -> bool:
        """Wait until every queued delivery finished (delivered or failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(d.status != "pending" for d in self.log) and not self._queue.unfinished_tasks:
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [d.as_dict() for d in self.log]
