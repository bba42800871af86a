"""Sync management: trigger a reconcile, follow it, list the history, cancel, clean up stale runs,
move poison messages back. Function keys in Azure (auth level FUNCTION); the local host asks
for LOCAL_FUNCTION_KEY when it is set. Every tenant-scoped route acts on the route's tenant only.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Literal

import azure.functions as func
from pydantic import BaseModel, ConfigDict

from shared.blueprints.http import Refused, answer, http_function, json_body, query_limit, route_tenant
from shared.bootstrap import Runtime
from shared.queues.messages import ReconcileMessage
from shared.reads.runs import run_detail, run_history
from shared.reads.status import tenant_status
from shared.service.poison import RedriveRunning, redrive_changes
from shared.service.reconciles import TenantDisabled, queue_reconcile
from shared.settings import TenantConfig
from shared.store.engine import write_transaction
from shared.store.runs import RunActive, end_run, reap_stale
from shared.timebounds import RANGE_TEXT, instant_in_range

log = logging.getLogger("shared.functions")
bp = func.Blueprint()
_RUN_ID = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["full", "incremental", "hot"]
    mode: str | None = None  # one of the tenant's sync modes (kind incremental): its entities only


@bp.function_name("trigger_sync")
@bp.route(route="tenants/{tenant}/sync", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@http_function("trigger_sync")
def trigger_sync(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    """202 with the queued run's id; 409 naming the active run of that kind."""
    tenant = route_tenant(rt, req)
    body = json_body(req, SyncRequest)
    kind, mode = body.kind, tenant.mode(body.mode) if body.mode is not None else None
    if body.mode is not None and mode is None:
        raise Refused(400, "unknown-mode", mode=body.mode, modes=[m.name for m in tenant.modes])
    if mode is not None and kind != "incremental":
        raise Refused(400, "mode-needs-incremental", mode=mode.name)
    run_id = queue(rt, tenant, ReconcileMessage(tenant=tenant.id, reconcile=kind, mode=body.mode))
    return answer(202, {"runId": run_id, "tenant": tenant.id, "kind": kind, "status": "queued",
                        **({"mode": mode.name, "entities": mode.entities} if mode else {})},
                  {"Location": f"/api/tenants/{tenant.id}/sync/runs/{run_id}"})


def queue(rt: Runtime, tenant: TenantConfig, message: ReconcileMessage) -> str:
    """queue_reconcile, its refusals as 409s."""
    try:
        return queue_reconcile(rt, tenant, message)
    except TenantDisabled:
        raise Refused(409, "tenant-disabled") from None
    except RunActive as active:
        raise Refused(409, "already-running", runId=active.run_id, kind=message.reconcile) from None


@bp.function_name("replay_sync")
@bp.route(route="tenants/{tenant}/sync/replay", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@http_function("replay_sync")
def replay_sync(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    """Re-read everything of ``type`` (comma-separated; all types when absent) changed since
    ``since`` (ISO 8601 with an offset): an incremental run whose windows start there."""
    tenant = route_tenant(rt, req)
    raw_types = [t for t in req.params.get("type", "").split(",") if t]
    listed = tenant.entities()
    unknown = sorted(set(raw_types) - set(listed))
    if unknown or len(raw_types) > len(listed):
        raise Refused(400, "bad-type", expected=list(listed))
    since = parse_instant(req.params.get("since", ""))
    now = rt.clock()
    if since is None or since >= now:
        raise Refused(400, "bad-since", expected=f"an ISO 8601 time with an offset, in the past, {RANGE_TEXT}")
    types = [t for t in listed if t in raw_types] or None
    run_id = queue(rt, tenant, ReconcileMessage(tenant=tenant.id, reconcile="incremental", types=types, since=since))
    return answer(202, {"runId": run_id, "tenant": tenant.id, "kind": "incremental", "status": "queued",
                        "types": types or list(listed), "since": since.isoformat()},
                  {"Location": f"/api/tenants/{tenant.id}/sync/runs/{run_id}"})


def route_run_id(req: func.HttpRequest) -> str:
    """The run id from the route: a UUID as this service writes them, else no such run (a NUL
    or other text that cannot be a run id never reaches a query)."""
    run_id = req.route_params.get("run_id", "")
    if not _RUN_ID.match(run_id):
        raise Refused(404, "unknown-run")
    return run_id


def parse_instant(text: str) -> datetime | None:
    """An ISO 8601 time with an offset, within the range the sync windows can compute with."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00")) if 0 < len(text) <= 40 else None
    except ValueError:
        return None
    return value if value is not None and instant_in_range(value) else None


@bp.function_name("sync_run")
@bp.route(route="tenants/{tenant}/sync/runs/{run_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@http_function("sync_run")
def sync_run(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    tenant = route_tenant(rt, req)
    run_id = route_run_id(req)
    with rt.engine.connect() as conn:
        run = run_detail(conn, tenant.id, run_id, rt.clock())
    if run is None:
        raise Refused(404, "unknown-run")
    return answer(200, run)


@bp.function_name("sync_runs")
@bp.route(route="tenants/{tenant}/sync/runs", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@http_function("sync_runs")
def sync_runs(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    tenant = route_tenant(rt, req)
    limit = query_limit(req, default=20, maximum=100)
    with rt.engine.connect() as conn:
        history = run_history(conn, tenant.id, limit, rt.clock())
    return answer(200, history)


@bp.function_name("cancel_sync_run")
@bp.route(route="tenants/{tenant}/sync/runs/{run_id}/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@http_function("cancel_sync_run")
def cancel_sync_run(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    """200 when cancelled; 409 with the status when the run had already finished."""
    tenant = route_tenant(rt, req)
    run_id = route_run_id(req)
    with write_transaction(rt.engine) as conn:
        ended, status = end_run(conn, tenant.id, run_id)
    if status is None:
        raise Refused(404, "unknown-run")
    if not ended:
        raise Refused(409, "already-finished", runId=run_id, status=status)
    log.info("sync tenant=%s run=%s outcome=cancelled", tenant.id, run_id)
    return answer(200, {"runId": run_id, "status": "cancelled"})


@bp.function_name("cleanup_sync_runs")
@bp.route(route="sync/cleanup", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@http_function("cleanup_sync_runs")
def cleanup_sync_runs(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    """Mark runs without a heartbeat for SYNC_RUN_STALE_AFTER seconds ``failed_stale``."""
    with write_transaction(rt.engine) as conn:
        reaped = reap_stale(conn, older_than=timedelta(seconds=rt.settings.run_stale_after))
    if reaped:
        log.warning("sync cleanup reaped runs=%s", ",".join(reaped))
    return answer(200, {"failedStale": reaped, "count": len(reaped)})


@bp.function_name("redrive_poison")
@bp.route(route="tenants/{tenant}/poison/redrive", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@http_function("redrive_poison")
def redrive_poison(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    """Move this tenant's change messages from the poison queue back to ``changes`` (fresh
    dequeue count); 409 while another re-drive runs (shared.service.poison)."""
    tenant = route_tenant(rt, req)
    try:
        moved, kept = redrive_changes(rt, tenant.id)
    except RedriveRunning:
        raise Refused(409, "redrive-running", retryAfterSeconds=5) from None
    return answer(200, {"tenant": tenant.id, "moved": moved, "leftForOthers": kept})


@bp.function_name("sync_status")
@bp.route(route="tenants/{tenant}/sync/status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@http_function("sync_status")
def sync_status(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    tenant = route_tenant(rt, req)
    with rt.engine.connect() as conn:
        status = tenant_status(conn, tenant, rt.queues, rt.rate_budget(tenant.id), rt.clock())
    return answer(200, status)
