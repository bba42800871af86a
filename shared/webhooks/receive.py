"""Receive one webhook delivery: authenticate, dedupe, enqueue change messages, answer.

Never 2xx without a durable enqueue: when the queue (or the inbox) cannot be reached the answer
is 503 and the sender retries. The mirror is never written here; the apply function re-reads
each announced resource — or, for a REST source with no single-record read, applies the record
the event carried, which travels in the message. A duplicate (same idempotency key within the
retention window) is acknowledged without enqueueing again.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from shared.availability import is_unavailable
from shared.metrics import Metrics, hour_bucket, minute_bucket
from shared.queues.messages import (
    CHANGES_QUEUE,
    MAX_MESSAGE_BYTES,
    RECONCILE_QUEUE,
    ChangeMessage,
    ReconcileMessage,
    encode,
)
from shared.queues.port import QueuePort
from shared.settings import TenantConfig
from shared.store.inbox import INBOX_RETENTION, claim_delivery, delivery_transaction
from shared.store.leases import take_lease
from shared.store.webhook_events import record_notification
from shared.sync.reconcile import LAG
from shared.webhooks.allowlist import check_allowed
from shared.webhooks.notifications import parse_event_name, parse_notification
from shared.webhooks.rejected import WebhookRejected
from shared.webhooks.rest_events import parse_rest_event
from shared.webhooks.verify import verify_request

log = logging.getLogger("shared.webhooks")
# One line per delivery: under shared.events, which `serve` keeps quiet unless SYNC_LOG_LEVEL=DEBUG.
event_log = logging.getLogger("shared.events.webhooks")
# Longer than the ±300 s signature tolerance and than any sender's retry schedule we know of.
EVENT_METRIC = "webhook.event."
EMPTY_EVENT_DEBOUNCE = timedelta(seconds=30)
_EVENT_TEXT = re.compile(r"^[a-z]{1,30}[-.][a-z]{1,10}$", re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def receive_webhook(engine: Engine, queues: QueuePort, tenant: TenantConfig | None, event: str,
                    headers: Mapping[str, str], body: bytes, now: datetime, metrics: Metrics) -> Answer:
    answer = _receive(engine, queues, tenant, event, headers, body, now, metrics)
    metrics.maybe_flush(engine)
    return answer


def _receive(engine: Engine, queues: QueuePort, tenant: TenantConfig | None, event: str,
             headers: Mapping[str, str], body: bytes, now: datetime, metrics: Metrics) -> Answer:
    tenant_label = tenant.id if tenant else "?"
    if tenant is not None:  # unknown tenants are not counted: their names come from the URL
        metrics.add(tenant.id, "webhook.received")
        metrics.add(tenant.id, minute_bucket(now))
        metrics.add(tenant.id, hour_bucket(now))
    label = event if _EVENT_TEXT.match(event) else "?"  # from the URL: never log it raw
    try:
        if tenant is None:
            raise WebhookRejected(404, "unknown-tenant")
        if not tenant.enabled:
            raise WebhookRejected(403, "tenant-disabled")
        check_allowed(tenant.webhook_allowed_ips, headers)
        if tenant.is_fhir:
            key = verify_request(tenant.webhook_scheme, [s.get_secret_value() for s in tenant.webhook_secrets],
                                 headers, body, now.timestamp(), header=tenant.webhook_header)
            events, status = parse_notification(body, event)
            messages = [ChangeMessage(tenant=tenant.id, type=item.type, id=item.id, action=item.action,
                                      version=item.version, event_key=key[:200], received_at=now,
                                      event_at=item.timestamp) for item in events]
            retention = INBOX_RETENTION
        else:
            key, messages, retention = _rest_event(tenant, headers, body, now)
            status = None
    except WebhookRejected as rejected:
        log.info("webhook tenant=%s event=%s outcome=rejected reason=%s", tenant_label, label, rejected.reason)
        if tenant is not None:
            metrics.add(tenant.id, f"webhook.rejected.{rejected.reason}")
        return Answer(rejected.status, {"error": rejected.reason})
    assert tenant is not None
    try:
        # The claim, the enqueue and the record commit together. A concurrent copy of this
        # delivery waits on the claimed key (PostgreSQL and Azure SQL: its insert blocks on the
        # uncommitted row; SQLite: one writer at a time) and finds it taken once this commits:
        # exactly one copy enqueues. A failed enqueue rolls the claim back, so the sender's
        # retry goes through.
        with delivery_transaction(engine) as conn:
            if not claim_delivery(conn, tenant.id, key, event, now, retention):
                event_log.info("webhook tenant=%s event=%s outcome=duplicate", tenant.id, label)
                metrics.add(tenant.id, "webhook.duplicate")
                return Answer(200, {"duplicate": True})
            if messages:
                queues.send_many(CHANGES_QUEUE, [encode(m) for m in messages])
            if status is not None:
                route_type = parse_event_name(event)[0]
                reconcile = (status.announces_changes and status.unfocused > 0
                             and request_reconcile(conn, queues, tenant.id, route_type, now))
                record_notification(conn, tenant.id, status.subscription, status.event_numbers,
                                    status.events_since_start, {m.type for m in messages} or {route_type}, now)
    except Exception as exc:
        if not is_unavailable(exc):
            raise  # a bug: the host's 500 with its traceback, not a "retry later" that never works
        # Storage trouble: the sender must retry.
        log.warning("webhook tenant=%s event=%s outcome=unavailable reason=%s", tenant.id, label, exc.__class__.__name__)
        metrics.add(tenant.id, "webhook.unavailable")
        return Answer(503, {"error": "temporarily-unavailable"}, {"Retry-After": "5"})
    if status is not None and not status.announces_changes:
        event_log.info("webhook tenant=%s event=%s outcome=acknowledged type=%s", tenant.id, label, status.type)
        metrics.add(tenant.id, f"webhook.{status.type}")
        return Answer(200, {"acknowledged": status.type})
    event_log.info("webhook tenant=%s event=%s outcome=enqueued changes=%d", tenant.id, label, len(messages))
    metrics.add(tenant.id, "webhook.enqueued", len(messages))
    if label != "?":  # per event type: its row's updated_at is the last delivery of that type
        metrics.add(tenant.id, f"{EVENT_METRIC}{label.lower()}")
    if status is not None and status.unfocused:
        metrics.add(tenant.id, "webhook.unfocused_events", status.unfocused)
        return Answer(202, {"accepted": len(messages), "reconcile": route_type, "reconcileQueued": bool(reconcile)})
    return Answer(202, {"accepted": len(messages)})


def _rest_event(tenant: TenantConfig, headers: Mapping[str, str], body: bytes,
                now: datetime) -> tuple[str, list[ChangeMessage], timedelta]:
    """A REST source's event (docs/webhooks.md, "REST sources"): hex HMAC-SHA256 of the raw body in
    the spec's header, the sender's event id as the idempotency key, kept for its replay window."""
    spec = tenant.rest_spec()
    hook = spec.webhook
    if hook is None:
        raise WebhookRejected(404, "no-webhooks")
    verify_request("hmac-sha256", [s.get_secret_value() for s in tenant.webhook_secrets], headers, body,
                   now.timestamp(), header=tenant.webhook_header or hook.signature_header)
    entity = spec.entity(hook.entity)
    event = parse_rest_event(body, hook, entity)
    message = ChangeMessage(tenant=tenant.id, type=event.entity, id=event.id, action=event.action,
                            event_key=event.key, received_at=now, event_at=event.at,
                            data=None if entity.read is not None else event.record)
    if len(message.model_dump_json(exclude_none=True)) > MAX_MESSAGE_BYTES:
        raise WebhookRejected(413, "record-too-large")  # the next listing brings it
    return event.key, [message], timedelta(hours=hook.replay_window_hours)


def request_reconcile(conn: Connection, queues: QueuePort, tenant_id: str, resource_type: str, now: datetime) -> bool:
    """An incremental reconcile of ``resource_type`` for events that did not say what changed (a
    subscription with "empty" content). Debounced: one per EMPTY_EVENT_DEBOUNCE per tenant and
    type (a lease, decided by the database), and delayed until the reconcile's window — which
    ends LAG before it runs — covers every event of that period. True when this call queued it."""
    name = f"reconcile-request:{tenant_id}:{resource_type}"
    if not take_lease(conn, name, name, now, EMPTY_EVENT_DEBOUNCE):
        return False
    delay = (LAG + EMPTY_EVENT_DEBOUNCE).total_seconds() + 10
    queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant_id, reconcile="incremental",
                                                         types=[resource_type])), delay=delay)
    return True
