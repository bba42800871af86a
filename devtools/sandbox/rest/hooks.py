"""Webhooks from the REST sandboxes that send them (HIE, PPB): one JSON event per change, signed
with hex HMAC-SHA256 of the raw body in the API's header, delivered (with retries) on the FHIR
sandbox's notifier threads, every attempt in its log (``GET /_sandbox/deliveries``). Each
delivery's ``version`` is when its change happened; ``changes`` holds the change of each delivery
(the fault harness compares the mirror with the last one acknowledged)."""
from __future__ import annotations

import json
from typing import Any

from devtools.sandbox.notify import Delivery, Notifier, WebhookConfig
from devtools.sandbox.rest.store import Change
from shared.webhooks.signatures import hmac_sha256_hex


class EventSender(Notifier):
    def __init__(self, url: str, secret: str, header: str, **options: Any) -> None:
        """``options``: WebhookConfig's delivery settings (repeat, senders, backoff, max_attempts,
        seed); shuffle and drop_rate are the FHIR notifier's and are refused here."""
        if options.get("shuffle") or options.get("drop_rate"):
            raise ValueError("the REST sandboxes' webhooks are neither shuffled nor dropped")
        super().__init__(WebhookConfig(url, "hmac-sha256", secret, header, **options), url)
        self.changes: list[Change] = []

    def send(self, change: Change, event: dict[str, object]) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", self.config.header: hmac_sha256_hex(self.config.secret, body)}
        with self._lock:
            delivery = Delivery(change.action, change.entity, change.id, change.action, change.at.isoformat(),
                                len(self.log) + 1)
            self.log.append(delivery)
            self.changes.append(change)
        for _ in range(max(self.config.repeat, 1)):
            self._queue.put((delivery, body, headers))

    def deliveries_with_changes(self) -> list[tuple[dict[str, Any], Change]]:
        """Each delivery (as ``deliveries()``) with the change it carried, in the order of the changes."""
        with self._lock:
            return [(d.as_dict(), change) for d, change in zip(self.log, self.changes, strict=True)]
