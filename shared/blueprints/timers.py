"""The timer that fans out reconciles: one incremental reconcile message per due tenant.

It runs on the app setting %SYNC_FANOUT_SCHEDULE%; each enabled tenant is due when its own
``schedule`` fired since its last incremental run started. A due tenant whose run is still going
gets a message anyway: reconcile_step acknowledges it as already running.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

import azure.functions as func
from sqlalchemy import func as sql, select

from shared.bootstrap import runtime
from shared.queues.messages import RECONCILE_QUEUE, ReconcileMessage, encode
from shared.store.schema import sync_runs
from shared.sync.schedule import due_tenants

log = logging.getLogger("shared.functions")
bp = func.Blueprint()


def fan_out(now: datetime | None = None) -> list[str]:
    """Enqueue an incremental reconcile for every due tenant; returns their ids."""
    rt = runtime()
    now = now or datetime.now(timezone.utc)
    c = sync_runs.c
    with rt.engine.connect() as conn:
        last = {tenant: started for tenant, started in conn.execute(
            select(c.tenant_id, sql.max(c.started_at)).where(c.kind == "incremental").group_by(c.tenant_id))}
    due = [t.id for t in due_tenants(rt.tenants.values(), last, now)]  # type: ignore[attr-defined]
    for tenant_id in due:
        rt.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant_id, reconcile="incremental")))
    log.info("fan-out due=%d tenants=%s", len(due), ",".join(due))
    return due


@bp.timer_trigger(arg_name="timer", schedule="%SYNC_FANOUT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def reconcile_fan_out(timer: func.TimerRequest) -> None:
    fan_out()
