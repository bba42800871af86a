"""Reconciles as use cases: queue one on request, fan out the due ones on the timer, and run one
invocation's share of a run (the continuation enqueued when its time budget is spent).

Log lines carry tenant, kind, run id and outcome — never resource content.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from shared.bootstrap import Runtime
from shared.queues.messages import (
    CHANGES_QUEUE,
    MAX_DEQUEUE_COUNT,
    RECONCILE_QUEUE,
    InvalidMessage,
    ReconcileMessage,
    decode,
    encode,
)
from shared.queues.port import poison_name
from shared.reads.health import tenant_health
from shared.settings import TenantConfig
from shared.source.errors import DuplicateKeys, SourceError
from shared.store.engine import write_transaction
from shared.store.inbox import forget_expired
from shared.store.runs import (
    LeaseLost,
    RunActive,
    RunLease,
    claim,
    end_run,
    finish,
    fully_loaded,
    last_started,
    queue_run,
    reap_stale,
    release,
    start_or_resume,
)
from shared.store.webhook_events import settle_gaps
from shared.sync.reconcile import run_reconcile
from shared.sync.schedule import due_modes, due_runs
from shared.sync.silence import silence_check
from shared.telemetry import telemetry

log = logging.getLogger("shared.functions")
fanout_log = logging.getLogger("shared.events.fanout")  # one line per tick: quiet in `serve`
RunReconcile = Callable[..., Awaitable[bool]]


class TenantDisabled(Exception):
    """A run was asked for a tenant whose configuration says enabled: false."""


def queue_reconcile(rt: Runtime, tenant: TenantConfig, message: ReconcileMessage) -> str:
    """A queued run and its message; returns the run id. Raises TenantDisabled, or RunActive
    naming the active run of that kind; when the queue refuses the message the run is failed at
    once, so its slot is free again."""
    if not tenant.enabled:
        raise TenantDisabled(tenant.id)
    with write_transaction(rt.engine) as conn:
        run_id = queue_run(conn, tenant.id, message.reconcile, mode=message.mode)
    try:
        rt.queues.send(RECONCILE_QUEUE, encode(message.model_copy(update={"run_id": run_id})))
    except Exception:
        with write_transaction(rt.engine) as conn:
            end_run(conn, tenant.id, run_id, status="failed", error="its message could not be enqueued")
        raise
    log.info("sync tenant=%s kind=%s run=%s outcome=queued", tenant.id, message.reconcile, run_id)
    return run_id


async def reconcile_step(rt: Runtime, text: str, *, redelivered: bool = False, last_attempt: bool = False,
                         run: RunReconcile = run_reconcile) -> str:
    """One invocation's share of a reconcile; enqueues the continuation when the budget is spent.
    ``redelivered``: an earlier delivery of this message died (a worker crash): the run it left
    active is taken over at once. ``last_attempt``: the host poisons this message if it fails
    again, so a failure ends the run as failed (freeing its slot) instead of releasing it for a
    retry. ``run``: the reconcile itself (a test passes one that fails on cue)."""
    message = decode(text, ReconcileMessage)
    tenant = rt.tenant(message.tenant)
    unknown = sorted(set(message.types or ()) - set(tenant.entities()))
    if unknown:
        raise InvalidMessage(f"not a ReconcileMessage for tenant {tenant.id}: its source has no {', '.join(unknown)}")
    mode = tenant.mode(message.mode) if message.mode else None
    if message.mode and (mode is None or message.reconcile != "incremental"):
        raise InvalidMessage(f"not a ReconcileMessage for tenant {tenant.id}: no incremental sync mode "
                             f"{message.mode!r} (a settings change since it was queued?)")
    only = message.types or (mode.entities if mode else None)
    try:
        with write_transaction(rt.engine) as conn:
            lease = claim(conn, message.run_id) if message.run_id else start_or_resume(
                conn, tenant.id, message.reconcile, stale_after=timedelta(seconds=rt.settings.run_stale_after),
                take_over=redelivered, mode=message.mode)
    except RunActive as exc:
        log.info("reconcile tenant=%s kind=%s outcome=already-running run=%s", tenant.id, message.reconcile, exc.run_id)
        return "already-running"
    except LeaseLost:
        return "superseded"
    client = rt.sources().source(tenant)
    deadline = time.monotonic() + rt.settings.reconcile_time_budget
    try:
        silence = silence_check(tenant, rt.settings.webhook_silent_grace, rt.clock())
        finished = await run(rt.engine, client, tenant, lease, deadline=deadline, only=only,
                             since=message.since, silence=silence, now=rt.clock)
    except LeaseLost:
        return "superseded"
    except DuplicateKeys:
        # The source's data breaks its spec: recorded on the run (with the values) by
        # run_reconcile; an error here for the alert, without the values (they may be personal).
        log.error("reconcile tenant=%s run=%s outcome=blocked reason=DuplicateKeys: records repeat columns "
                  "their spec says are unique; nothing of them written (the run's error names them)", tenant.id,
                  lease.run_id)
        outcome = "failed"
    except SourceError as exc:
        # Recorded on the run by run_reconcile; the next scheduled run tries again.
        log.warning("reconcile tenant=%s run=%s outcome=failed reason=%s", tenant.id, lease.run_id, exc.__class__.__name__)
        outcome = "failed"
    except Exception as exc:
        # Not the source: the database went away mid-step, or a bug. The host retries this
        # message; release the run so that the retry resumes it from its checkpoint.
        if last_attempt:
            log.error("reconcile tenant=%s run=%s outcome=failed reason=%s (last attempt)", tenant.id,
                      lease.run_id, exc.__class__.__name__)
            fail_run(rt.engine, lease, f"gave up after {MAX_DEQUEUE_COUNT} attempts: {exc.__class__.__name__}")
            telemetry().run_finished(tenant.id, lease.kind, lease.run_id, "failed")
            raise
        log.warning("reconcile tenant=%s run=%s outcome=retrying reason=%s", tenant.id, lease.run_id,
                    exc.__class__.__name__)
        release_run(rt.engine, lease, timedelta(seconds=rt.settings.run_stale_after))
        telemetry().run_finished(tenant.id, lease.kind, lease.run_id, "retrying")
        raise
    else:
        outcome = "completed" if finished else "continued"
    if outcome == "continued":
        rt.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant.id, reconcile=message.reconcile,
                                                                run_id=lease.run_id)))
    telemetry().run_finished(tenant.id, lease.kind, lease.run_id, outcome)
    return outcome


def fail_run(engine: Engine, lease: RunLease, error: str) -> None:
    try:
        with write_transaction(engine) as conn:
            finish(conn, lease, "failed", error=error)
    except Exception as exc:
        log.warning("reconcile run=%s not marked failed: %s", lease.run_id, exc.__class__.__name__)


def release_run(engine: Engine, lease: RunLease, stale_after: timedelta) -> None:
    try:
        with write_transaction(engine) as conn:
            release(conn, lease, stale_after=stale_after)
    except Exception as exc:
        log.warning("reconcile run=%s not released: %s", lease.run_id, exc.__class__.__name__)


def fan_out(rt: Runtime, now: datetime | None = None) -> list[tuple[str, str]]:
    """Enqueue a reconcile for every due (tenant, kind) — each enabled tenant's incremental, hot
    and full runs are due when their own schedule fired since that kind last started, and a tenant
    never fully loaded gets its full run alone — and one for every confirmed webhook gap; returns
    them. A due kind whose run is still going gets a message anyway: reconcile_step acknowledges
    it as already running."""
    now = now or rt.clock()
    with write_transaction(rt.engine) as conn:
        reaped = reap_stale(conn, older_than=timedelta(seconds=4 * rt.settings.run_stale_after), now=now)
        forget_expired(conn, now)
    if reaped:
        log.warning("fan-out reaped stale runs=%s", ",".join(reaped))
    with rt.engine.connect() as conn:
        last, loaded = last_started(conn), fully_loaded(conn)
    due = due_runs(rt.tenants.values(), last, now, loaded)
    for tenant_id, kind in due:
        rt.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant_id, reconcile=kind)))
    for tenant_id, mode in due_modes(rt.tenants.values(), last, now, loaded):
        rt.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant_id, reconcile="incremental", mode=mode)))
        due.append((tenant_id, f"incremental/{mode}"))
    fanout_log.info("fan-out due=%d runs=%s", len(due), ",".join(f"{t}:{k}" for t, k in due))
    for tenant in rt.tenants.values():
        if tenant.enabled:
            due.extend(reconcile_gaps(rt, tenant.id, now))
    rt.metrics.maybe_flush(rt.engine)
    observe(rt, now)
    return due


def observe(rt: Runtime, now: datetime) -> None:
    """Gauges for Application Insights: each tenant's freshness and failure streak, the queues'
    depth and oldest message, the poison queues' depth. Never fails the fan-out."""
    instruments = telemetry()
    try:
        with rt.engine.connect() as conn:
            for tenant in rt.tenants.values():
                if tenant.enabled:
                    health = tenant_health(conn, tenant, now)
                    instruments.freshness(tenant.id, health.freshness_seconds, health.error_after_seconds,
                                          health.failure_streak)
        for queue in (CHANGES_QUEUE, RECONCILE_QUEUE):
            instruments.queue(queue, rt.queues.count(queue), rt.queues.oldest_age(queue))
            instruments.poison(poison_name(queue), rt.queues.count(poison_name(queue)))
    except Exception as exc:
        log.warning("fan-out observe failed: %s", exc.__class__.__name__)


def reconcile_gaps(rt: Runtime, tenant_id: str, now: datetime) -> list[tuple[str, str]]:
    """Settle the tenant's webhook subscriptions; each confirmed gap gets a targeted incremental."""
    with write_transaction(rt.engine) as conn:
        gaps = settle_gaps(conn, tenant_id, now, timedelta(seconds=rt.settings.webhook_gap_grace))
    for gap in gaps:
        listed = rt.tenant(tenant_id).entities()
        types: list[Any] | None = [t for t in gap.resource_types if t in listed] or None
        rt.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant_id, reconcile="incremental",
                                                                types=types)))
        rt.metrics.add(tenant_id, "webhook.gap_events", gap.missing)
        rt.metrics.add(tenant_id, "webhook.gap_reconciles")
        log.warning("webhook gap tenant=%s missing=%d types=%s: incremental reconcile enqueued", tenant_id,
                    gap.missing, ",".join(types or ["all"]))
    return [(tenant_id, "incremental")] * len(gaps)
