"""Queue-triggered functions: apply one change; run one reconcile step and its continuation.

The handlers are plain coroutines over message text (the local host and tests call them); the
decorated functions only adapt the trigger. Log lines carry tenant, resource type, opaque id,
run id and outcome — never resource content.
"""
from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import azure.functions as func
from sqlalchemy import Engine

from shared import failpoints
from shared.bootstrap import runtime
from shared.metrics import Metrics
from shared.queues.messages import (
    CHANGES_QUEUE,
    MAX_DEQUEUE_COUNT,
    RECONCILE_QUEUE,
    ChangeMessage,
    ReconcileMessage,
    decode,
    encode,
)
from shared.source.errors import CredentialsRefused, SourceError, SourceUnavailable
from shared.store.engine import write_transaction
from shared.store.guard import UpsertCounts
from shared.sync.apply import ApplyResult, apply_change
from shared.sync.reconcile import run_reconcile
from shared.sync.runs import LeaseLost, RunActive, RunLease, claim, finish, release, start_or_resume
from shared.sync.silence import silence_check
from shared.telemetry import telemetry

log = logging.getLogger("shared.functions")
event_log = logging.getLogger("shared.events.apply")  # one line per change: quiet in `serve`
MAX_DEFERRALS = 50
MIN_DEFER_SECONDS, MAX_DEFER_SECONDS = 1.0, 3600.0
bp = func.Blueprint()


async def handle_change(text: str) -> ApplyResult:
    """Raises on bad messages and source trouble: the queue retries, then poisons.

    When the source holds us back (429 with a long Retry-After, an open circuit, the tenant's
    credentials refused) the change is sent again with a visibility delay until then and this
    delivery is acknowledged: waiting is not failing, so it must not spend one of the message's
    delivery attempts. A change deferred MAX_DEFERRALS times is retried as a failure (and can reach the poison queue)."""
    rt = runtime()
    message = decode(text, ChangeMessage)
    client = rt.sources().client(rt.tenant(message.tenant))
    try:
        result = await apply_change(rt.engine, client, message)
    except (SourceUnavailable, CredentialsRefused) as exc:
        deferrals = message.deferrals or 0
        if not exc.held or deferrals >= MAX_DEFERRALS:
            rt.metrics.add(message.tenant, "apply.failed")
            raise
        delay = min(max((exc.retry_at or 0) - time.time(), MIN_DEFER_SECONDS), MAX_DEFER_SECONDS)
        rt.queues.send(CHANGES_QUEUE, encode(message.model_copy(update={"deferrals": deferrals + 1})), delay=delay)
        event_log.info("apply tenant=%s type=%s id=%s outcome=deferred delay=%.0fs deferrals=%d", message.tenant,
                       message.type, message.id, delay, deferrals + 1)
        result = ApplyResult("deferred", UpsertCounts(), str(exc))
    except SourceError:
        rt.metrics.add(message.tenant, "apply.failed")
        raise
    else:
        failpoints.hit("apply.after_commit")
        event_log.info("apply tenant=%s type=%s id=%s outcome=%s", message.tenant, message.type, message.id,
                       result.outcome)
    record_apply(rt.metrics, message, result, datetime.now(UTC))
    rt.metrics.maybe_flush(rt.engine)
    return result


def record_apply(metrics: Metrics, message: ChangeMessage, result: ApplyResult, now: datetime) -> None:
    """Outcome counts, and the lag from the event (or its receipt) to the committed row."""
    metrics.add(message.tenant, f"apply.{result.outcome}")
    counts = result.counts
    metrics.add(message.tenant, "apply.stale", counts.stale)
    metrics.add(message.tenant, "apply.unchanged", counts.unchanged)
    written = counts.written
    metrics.add(message.tenant, "apply.written", written)
    telemetry().records_synced(message.tenant, message.type, "webhook", written)
    since = message.event_at or message.received_at
    if written and since is not None:
        metrics.observe_lag(message.tenant, (now - since).total_seconds())


async def handle_reconcile(text: str, *, redelivered: bool = False, last_attempt: bool = False) -> str:
    """One invocation's share of a reconcile; enqueues the continuation when the budget is spent.
    ``redelivered``: an earlier delivery of this message died (a worker crash): the run it left
    active is taken over at once. ``last_attempt``: the host poisons this message if it fails
    again, so a failure ends the run as failed (freeing its slot) instead of releasing it for a retry."""
    rt = runtime()
    message = decode(text, ReconcileMessage)
    tenant = rt.tenant(message.tenant)
    try:
        with write_transaction(rt.engine) as conn:
            lease = claim(conn, message.run_id) if message.run_id else start_or_resume(
                conn, tenant.id, message.reconcile, stale_after=timedelta(seconds=rt.settings.run_stale_after),
                take_over=redelivered)
    except RunActive as exc:
        log.info("reconcile tenant=%s kind=%s outcome=already-running run=%s", tenant.id, message.reconcile, exc.run_id)
        return "already-running"
    except LeaseLost:
        return "superseded"
    client = rt.sources().client(tenant)
    deadline = time.monotonic() + rt.settings.reconcile_time_budget
    try:
        silence = silence_check(tenant, rt.settings.webhook_silent_grace, datetime.now(UTC))
        finished = await run_reconcile(rt.engine, client, tenant, lease, deadline=deadline, only=message.types,
                                       since=message.since, silence=silence)
    except LeaseLost:
        return "superseded"
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


@bp.queue_trigger(arg_name="msg", queue_name=CHANGES_QUEUE, connection="AzureWebJobsStorage")
async def apply_change_message(msg: func.QueueMessage) -> None:
    await handle_change(msg.get_body().decode())


@bp.queue_trigger(arg_name="msg", queue_name=RECONCILE_QUEUE, connection="AzureWebJobsStorage")
async def reconcile_step(msg: func.QueueMessage) -> None:
    count = msg.dequeue_count or 1
    await handle_reconcile(msg.get_body().decode(), redelivered=count > 1, last_attempt=count >= MAX_DEQUEUE_COUNT)
