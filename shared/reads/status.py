"""A tenant's sync status for operators: freshness per type, webhooks, failures, the source's
breaker, queues, silent-webhook warnings, credentials, and when each reconcile runs next."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from shared.queues.messages import CHANGES_QUEUE, RECONCILE_QUEUE
from shared.queues.port import QueuePort, poison_name
from shared.reads.health import tenant_health
from shared.settings import TenantConfig
from shared.source.budget import RateBudget
from shared.source.client import breaker_key
from shared.store.metrics import RATE_MINUTES, webhook_rate
from shared.store.status import breaker_row, counters, latest_finished_run, silence_rows, watermarks
from shared.sync.schedule import KINDS, next_fire
from shared.webhooks.receive import EVENT_METRIC


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def credential_health(conn: Connection, tenant_id: str) -> dict[str, Any]:
    """From the latest finished run: a refused token is a credential problem (wrong secret, a
    missing scope), which an operator must not read as "no data"."""
    latest = latest_finished_run(conn, tenant_id)
    if latest is None:
        return {"status": "unknown", "detail": "no run has finished yet", "checkedAt": None}
    refused = latest.status == "failed" and "token" in (latest.error or "").lower()
    return {"status": "refused" if refused else "ok",
            "detail": (latest.error or "")[:300] if refused else "the latest run obtained a token",
            "checkedAt": _iso(latest.finished_at)}


def queue_view(queues: QueuePort, name: str) -> dict[str, Any]:
    try:
        age = queues.oldest_age(name)
        return {"depth": queues.count(name), "oldestMessageAgeSeconds": round(age, 1) if age is not None else None}
    except Exception as exc:
        return {"depth": None, "oldestMessageAgeSeconds": None, "error": exc.__class__.__name__}


def tenant_status(conn: Connection, tenant: TenantConfig, queues: QueuePort, budget: RateBudget | None,
                  now: datetime) -> dict[str, Any]:
    health = tenant_health(conn, tenant, now)
    freshness = {rtype: {"watermark": _iso(mark), "ageSeconds": round((now - mark).total_seconds()) if mark else None}
                 for rtype, mark in watermarks(conn, tenant.id)}
    webhooks = {name.removeprefix(EVENT_METRIC): {"count": value, "lastAt": _iso(at)}
                for name, value, at in counters(conn, tenant.id, EVENT_METRIC)}
    breaker = breaker_row(conn, breaker_key(tenant))
    silent = [{"resourceType": r.resource_type, "changes": r.changes, "firstSeenAt": _iso(r.first_seen_at),
               "lastSeenAt": _iso(r.last_seen_at), "lastRunId": r.last_run_id}
              for r in silence_rows(conn, tenant.id)]
    local = now.astimezone(tenant.zone)
    return {
        "tenant": tenant.id,
        "enabled": tenant.enabled,
        "health": health.as_dict(),
        "freshness": freshness,
        "webhooks": webhooks,
        "webhookRate": {"perMinute": round(webhook_rate(conn, tenant.id, now), 2), "overMinutes": RATE_MINUTES},
        "failureStreak": health.failure_streak,
        "breaker": {"state": breaker.state, "failures": breaker.failures,
                    "retryAfterUntil": (datetime.fromtimestamp(breaker.not_before, now.tzinfo).isoformat()
                                        if breaker.not_before > now.timestamp() else None),
                    "updatedAt": _iso(breaker.updated_at)} if breaker else {"state": "closed", "failures": 0},
        # Queues are shared by every tenant: their depth is the app's backlog, not this tenant's.
        "queues": {name: queue_view(queues, name) for name in (CHANGES_QUEUE, poison_name(CHANGES_QUEUE),
                                                                RECONCILE_QUEUE)},
        # Per process: fed by the source's x-ratelimit headers on this instance's own requests.
        "rateBudget": {"limit": budget.limit, "remaining": round(budget.remaining())} if budget else None,
        "silentWebhooks": silent,
        "credentials": credential_health(conn, tenant.id),
        "nextRuns": {kind: next_fire(schedule, local).isoformat() for kind in KINDS
                     if (schedule := tenant.schedule_for(kind)) is not None}
        if tenant.enabled else {},
    }
