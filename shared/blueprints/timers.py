"""The timer that fans out reconciles: one reconcile message per due (tenant, kind).

It runs on the app setting %SYNC_FANOUT_SCHEDULE%; each enabled tenant's incremental, hot and
full reconciles are due when their own schedule fired since that kind last started — and a tenant
never fully loaded gets its full run alone (no hot/incremental until one full run completed). A due kind
whose run is still going gets a message anyway: reconcile_step acknowledges it as already running.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import azure.functions as func
from sqlalchemy import func as sql
from sqlalchemy import select

from shared.bootstrap import runtime
from shared.queues.messages import CHANGES_QUEUE, RECONCILE_QUEUE, ReconcileMessage, encode
from shared.queues.port import poison_name
from shared.reads.health import tenant_health
from shared.store.engine import write_transaction
from shared.store.schema import sync_runs
from shared.sync.reconcile import TYPE_ORDER
from shared.sync.runs import reap_stale
from shared.sync.schedule import due_runs
from shared.telemetry import telemetry
from shared.webhooks.gaps import settle_gaps
from shared.webhooks.receive import forget_expired

log = logging.getLogger("shared.functions")
event_log = logging.getLogger("shared.events.fanout")  # one line per tick: quiet in `serve`
bp = func.Blueprint()


def fan_out(now: datetime | None = None) -> list[tuple[str, str]]:
    """Enqueue a reconcile for every due (tenant, kind); returns them."""
    rt = runtime()
    now = now or datetime.now(UTC)
    c = sync_runs.c
    with write_transaction(rt.engine) as conn:
        reaped = reap_stale(conn, older_than=timedelta(seconds=4 * rt.settings.run_stale_after), now=now)
        forget_expired(conn, now)
    if reaped:
        log.warning("fan-out reaped stale runs=%s", ",".join(reaped))
    with rt.engine.connect() as conn:
        last = {(tenant, kind): started for tenant, kind, started in conn.execute(
            select(c.tenant_id, c.kind, sql.max(c.started_at)).group_by(c.tenant_id, c.kind))}
        loaded = set(conn.execute(select(c.tenant_id).where(c.kind == "full", c.status == "completed")
                                  .distinct()).scalars())
    due = due_runs(rt.tenants.values(), last, now, loaded)
    for tenant_id, kind in due:
        rt.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant_id, reconcile=kind)))
    event_log.info("fan-out due=%d runs=%s", len(due), ",".join(f"{t}:{k}" for t, k in due))
    for tenant in rt.tenants.values():
        if tenant.enabled:
            due.extend(reconcile_gaps(tenant.id, now))
    rt.metrics.maybe_flush(rt.engine)
    observe(now)
    return due


def observe(now: datetime) -> None:
    """Gauges for Application Insights: each tenant's freshness and failure streak, the queues'
    depth and oldest message, the poison queues' depth. Never fails the fan-out."""
    rt = runtime()
    instruments = telemetry()
    try:
        with rt.engine.connect() as conn:
            for tenant in rt.tenants.values():
                if tenant.enabled:
                    health = tenant_health(conn, tenant, now)
                    instruments.freshness(tenant.id, health.freshness_seconds, 2 * health.interval_seconds,
                                          health.failure_streak)
        for queue in (CHANGES_QUEUE, RECONCILE_QUEUE):
            instruments.queue(queue, rt.queues.count(queue), rt.queues.oldest_age(queue))
            instruments.poison(poison_name(queue), rt.queues.count(poison_name(queue)))
    except Exception as exc:
        log.warning("fan-out observe failed: %s", exc.__class__.__name__)


def reconcile_gaps(tenant_id: str, now: datetime) -> list[tuple[str, str]]:
    """Settle the tenant's webhook subscriptions; each confirmed gap gets a targeted incremental."""
    rt = runtime()
    with write_transaction(rt.engine) as conn:
        gaps = settle_gaps(conn, tenant_id, now, timedelta(seconds=rt.settings.webhook_gap_grace))
    for gap in gaps:
        types = [t for t in gap.resource_types if t in TYPE_ORDER] or None
        rt.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant_id, reconcile="incremental",
                                                                types=types)))
        rt.metrics.add(tenant_id, "webhook.gap_events", gap.missing)
        rt.metrics.add(tenant_id, "webhook.gap_reconciles")
        log.warning("webhook gap tenant=%s missing=%d types=%s: incremental reconcile enqueued", tenant_id,
                    gap.missing, ",".join(types or ["all"]))
    return [(tenant_id, "incremental")] * len(gaps)


@bp.timer_trigger(arg_name="timer", schedule="%SYNC_FANOUT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def reconcile_fan_out(timer: func.TimerRequest) -> None:
    fan_out()
