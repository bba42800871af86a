"""Reconcile runs as operators see them: one run's progress, and a tenant's history."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from shared.store.status import RUN_COUNTS as COUNTS
from shared.store.status import AnyRow, run_row, run_rows, run_totals


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def run_view(row: AnyRow, now: datetime) -> dict[str, Any]:
    total, done = row.records_total, row.processed
    percentage = min(100.0, round(100 * done / total, 1)) if total else None
    if row.status == "completed":
        percentage = 100.0
    estimate = None
    if row.status == "running" and total and 0 < done < total:
        elapsed = (now - row.started_at).total_seconds()
        estimate = now + timedelta(seconds=elapsed / done * (total - done))
    return {
        "runId": row.id, "tenant": row.tenant_id, "kind": row.kind, "mode": row.mode, "status": row.status,
        "percentage": percentage, "step": row.step,
        "records": {"processed": done, "total": total},
        "counts": {name: getattr(row, name) for name in COUNTS},
        "startedAt": _iso(row.started_at), "heartbeatAt": _iso(row.heartbeat_at),
        "finishedAt": _iso(row.finished_at), "estimatedCompletion": _iso(estimate),
        "errors": [row.error] if row.error else [],
    }


def run_detail(conn: Connection, tenant_id: str, run_id: str, now: datetime) -> dict[str, Any] | None:
    row = run_row(conn, tenant_id, run_id)
    return run_view(row, now) if row else None


def run_history(conn: Connection, tenant_id: str, limit: int, now: datetime) -> dict[str, Any]:
    rows = run_rows(conn, tenant_id, limit)
    total, succeeded, failed, last_success = run_totals(conn, tenant_id)
    # Durations in Python: date arithmetic differs in every dialect, and this is one page of runs.
    durations = [(r.finished_at - r.started_at).total_seconds() for r in rows
                 if r.status == "completed" and r.finished_at]
    return {
        "tenant": tenant_id,
        "summary": {"total": total, "succeeded": succeeded, "failed": failed,
                    "averageDurationSeconds": round(sum(durations) / len(durations), 1) if durations else None,
                    "averageOver": len(durations), "lastSuccessAt": _iso(last_success)},
        "runs": [run_view(r, now) for r in rows],
    }
