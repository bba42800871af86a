"""A REST source's webhook event: ``{action, timestamp, <event id>, data: {the record}}`` at the
paths its spec names. Pure: bytes in, a RestEvent out, or WebhookRejected(400, reason)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from shared.rest.mapping import RecordError, source_id
from shared.rest.paths import MISSING, lookup
from shared.rest.spec import Entity, Webhook
from shared.webhooks.rejected import WebhookRejected

MAX_EVENT_ID = 190  # the inbox key is "event:" + the id, at most 200 characters


@dataclass(frozen=True)
class RestEvent:
    key: str  # the sender's event id: the delivery's idempotency key
    entity: str
    id: str
    action: Literal["update", "delete"]  # created and updated alike: the record is the truth
    at: datetime | None  # when the change happened, as the sender says
    record: dict[str, Any]


def parse_rest_event(body: bytes, webhook: Webhook, entity: Entity) -> RestEvent:
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRejected(400, "malformed-json") from None
    if not isinstance(event, dict):
        raise WebhookRejected(400, "unrecognised-body")
    event_id = lookup(event, webhook.event_id)
    if isinstance(event_id, bool) or not isinstance(event_id, (str, int)) or not 0 < len(str(event_id)) <= MAX_EVENT_ID:
        raise WebhookRejected(400, "no-event-id")
    action = lookup(event, webhook.action)
    if not isinstance(action, str) or not action:
        raise WebhookRejected(400, "no-action")
    record = lookup(event, webhook.data)
    if not isinstance(record, dict):
        raise WebhookRejected(400, "no-data")
    try:
        rid = source_id(record, entity.id)
    except RecordError:
        raise WebhookRejected(400, "bad-resource-id") from None
    return RestEvent(f"event:{event_id}", entity.name, rid,
                     "delete" if action in webhook.deleted_actions else "update",
                     _moment(lookup(event, webhook.timestamp) if webhook.timestamp else MISSING), record)


def _moment(value: Any) -> datetime | None:
    if value is MISSING or value is None:
        return None
    if not isinstance(value, str):
        raise WebhookRejected(400, "bad-timestamp")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise WebhookRejected(400, "bad-timestamp") from None
    if not 1900 <= moment.year <= 2999:
        return None  # as for Backport events: read as absent, the lag is measured from receipt
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
