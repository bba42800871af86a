"""What the operators' views read (shared.reads: health, run history, sync status, the status
page, the practitioner list): one function per question, rows out, no shaping."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, case, func, select

from shared.store.runs import FINAL_STATUSES, RunCounts
from shared.store.schema import (
    practitioners,
    source_health,
    sync_cursors,
    sync_runs,
    tenant_metrics,
    webhook_silence,
)

RUN_COUNTS = tuple(RunCounts().as_dict())
AnyRow = Row[*tuple[Any, ...]]  # a row of any columns (Row is generic over its column types)


# -- runs ---------------------------------------------------------------------------------------
@cache
def _streak_statement() -> Select[Any]:
    c = sync_runs.c
    return (select(c.status).where(c.tenant_id == bindparam("tenant"), c.status.in_(FINAL_STATUSES))
            .order_by(c.started_at.desc()).limit(bindparam("limit")))


def final_statuses(conn: Connection, tenant_id: str, limit: int) -> list[str]:
    """The statuses of the tenant's latest finished runs, newest first."""
    return list(conn.execute(_streak_statement(), {"tenant": tenant_id, "limit": limit}).scalars())


@cache
def _success_statement(kinds: tuple[str, ...]) -> Select[Any]:
    c = sync_runs.c
    return select(func.max(c.finished_at)).where(c.tenant_id == bindparam("tenant"), c.kind.in_(kinds),
                                                 c.status == "completed")


def last_success(conn: Connection, tenant_id: str, kinds: tuple[str, ...]) -> datetime | None:
    """When the tenant's latest completed run of one of ``kinds`` finished."""
    found: datetime | None = conn.execute(_success_statement(kinds), {"tenant": tenant_id}).scalar()
    return found


def _run_columns() -> list[Any]:
    c = sync_runs.c
    return [c.id, c.tenant_id, c.kind, c.mode, c.status, c.step, c.records_total, c.processed, c.error, c.started_at,
            c.heartbeat_at, c.finished_at, *(c[name] for name in RUN_COUNTS)]


def run_row(conn: Connection, tenant_id: str, run_id: str) -> AnyRow | None:
    c = sync_runs.c
    return conn.execute(select(*_run_columns()).where(c.id == run_id, c.tenant_id == tenant_id)).first()


def run_rows(conn: Connection, tenant_id: str, limit: int) -> Sequence[AnyRow]:
    """The tenant's latest runs, newest first."""
    c = sync_runs.c
    return conn.execute(select(*_run_columns()).where(c.tenant_id == tenant_id)
                        .order_by(c.started_at.desc(), c.id).limit(limit)).all()


def run_totals(conn: Connection, tenant_id: str) -> tuple[int, int, int, datetime | None]:
    """(runs, completed, failed, last completed at) over the tenant's whole history."""
    c = sync_runs.c
    completed = c.status == "completed"  # CASE, not FILTER: Azure SQL has no FILTER clause
    total, succeeded, failed, last = conn.execute(select(
        func.count(), func.count(case((completed, 1))), func.count(case((c.status.in_(("failed", "failed_stale")), 1))),
        func.max(case((completed, c.finished_at)))).where(c.tenant_id == tenant_id)).one()
    return int(total), int(succeeded), int(failed), last


def latest_finished_run(conn: Connection, tenant_id: str) -> AnyRow | None:
    """(status, error, finished_at) of the tenant's latest finished run."""
    c = sync_runs.c
    return conn.execute(select(c.status, c.error, c.finished_at).where(
        c.tenant_id == tenant_id, c.finished_at.is_not(None)).order_by(c.started_at.desc()).limit(1)).first()


def latest_run(conn: Connection, tenant_id: str) -> AnyRow | None:
    """(id, kind, status, started_at, finished_at, error) of the tenant's latest run."""
    c = sync_runs.c
    return conn.execute(select(c.id, c.kind, c.status, c.started_at, c.finished_at, c.error)
                        .where(c.tenant_id == tenant_id).order_by(c.started_at.desc()).limit(1)).first()


def recent_runs(conn: Connection, limit: int) -> Sequence[AnyRow]:
    """Every tenant's latest runs, newest first: (id, tenant_id, kind, mode, status, processed, started_at,
    finished_at)."""
    c = sync_runs.c
    return conn.execute(select(c.id, c.tenant_id, c.kind, c.mode, c.status, c.processed, c.started_at,
                               c.finished_at)
                        .order_by(c.started_at.desc()).limit(limit)).all()


def successes_since(conn: Connection, tenant_id: str, kinds: tuple[str, ...], since: datetime
                    ) -> tuple[datetime | None, list[datetime]]:
    """(the latest success at or before ``since``, the successes after it) of runs of ``kinds``."""
    c = sync_runs.c
    fresh = (c.tenant_id == tenant_id) & c.kind.in_(kinds) & (c.status == "completed")
    after = list(conn.execute(select(c.finished_at).where(fresh, c.finished_at > since)).scalars())
    before = conn.execute(select(func.max(c.finished_at)).where(fresh, c.finished_at <= since)).scalar()
    return before, after


def finished_runs_since(conn: Connection, tenant_id: str, since: datetime, limit: int) -> list[AnyRow]:
    """(started_at, finished_at, status) of the tenant's runs started after ``since``, newest first."""
    c = sync_runs.c
    return list(conn.execute(select(c.started_at, c.finished_at, c.status).where(
        c.tenant_id == tenant_id, c.started_at > since, c.finished_at.is_not(None))
        .order_by(c.started_at.desc()).limit(limit)).all())


# -- cursors, counters, breaker, silence ----------------------------------------------------------
def watermarks(conn: Connection, tenant_id: str) -> list[tuple[str, datetime | None]]:
    c = sync_cursors.c
    return [(t, mark) for t, mark in conn.execute(select(c.resource_type, c.watermark).where(
        c.tenant_id == tenant_id).order_by(c.resource_type))]


def counters(conn: Connection, tenant_id: str, prefix: str) -> list[tuple[str, int, datetime]]:
    """(name, value, last written) of the tenant's counters whose name starts with ``prefix``."""
    m = tenant_metrics.c
    return [(n, int(v), at) for n, v, at in conn.execute(select(m.name, m.value, m.updated_at).where(
        m.tenant_id == tenant_id, m.name.startswith(prefix, autoescape=True)).order_by(m.name))]


def counter(conn: Connection, tenant_id: str, name: str) -> tuple[int, datetime | None]:
    m = tenant_metrics.c
    row = conn.execute(select(m.value, m.updated_at).where(m.tenant_id == tenant_id, m.name == name)).first()
    return (int(row.value), row.updated_at) if row else (0, None)


def breaker_row(conn: Connection, breaker_key: str) -> AnyRow | None:
    """(state, failures, not_before, updated_at) of a source's breaker, None if never written."""
    h = source_health.c
    return conn.execute(select(h.state, h.failures, h.not_before, h.updated_at).where(
        h.breaker_key == breaker_key)).first()


def silence_rows(conn: Connection, tenant_id: str) -> Sequence[AnyRow]:
    s = webhook_silence.c
    return conn.execute(select(s.resource_type, s.changes, s.first_seen_at, s.last_seen_at, s.last_run_id)
                        .where(s.tenant_id == tenant_id).order_by(s.resource_type)).all()


# -- the mirror -------------------------------------------------------------------------------------
def practitioner_rows(conn: Connection, tenant_id: str, *, limit: int, after: str | None) -> Sequence[AnyRow]:
    """Live practitioners ordered by id, ``limit`` of them after the id ``after`` (keyset paging)."""
    p = practitioners.c
    query = (select(p.source_id, p.display_name, p.active)
             .where(p.tenant_id == tenant_id, p.deleted_at.is_(None))
             .order_by(p.source_id).limit(limit))
    if after is not None:
        query = query.where(p.source_id > after)
    return conn.execute(query).all()
