"""Webhooks from the REST sandboxes that send them (HIE, PPB): one JSON event per change, signed
with hex HMAC-SHA256 of the raw body in the API's header, delivered (with retries) on the FHIR
sandbox's notifier threads, every attempt in its log (``GET /_sandbox/deliveries``)."""
from __future__ import annotations

import json

from devtools.sandbox.notify import Delivery, Notifier, WebhookConfig
from devtools.sandbox.rest.store import Change
from shared.webhooks.signatures import hmac_sha256_hex


class EventSender(Notifier):
    def __init__(self, url: str, secret: str, header: str, *, repeat: int = 1) -> None:
        super().__init__(WebhookConfig(url, "hmac-sha256", secret, header, repeat=repeat), url)

    def send(self, change: Change, event: dict[str, object]) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", self.config.header: hmac_sha256_hex(self.config.secret, body)}
        with self._lock:
            delivery = Delivery(change.action, change.entity, change.id, change.action, "", len(self.log) + 1)
            self.log.append(delivery)
        for _ in range(max(self.config.repeat, 1)):
            self._queue.put((delivery, body, headers))
