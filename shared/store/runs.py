"""Reconcile runs in ``sync_runs``: one active run per (tenant, kind), fenced checkpoints.

- Starting a run inserts it as ``running``; the filtered unique index on (tenant, kind) while
  ``queued``/``running`` makes the database refuse a second one, whoever races: RunActive
  names the run that holds the slot.
- Every invocation that works on a run (the first, or a continuation) claims it, which bumps
  the fencing token. Checkpoints, heartbeats and the finish write only where the token still
  matches, so a stale worker that lost the run can never overwrite the new holder's progress.
- The reaper marks running runs without a heartbeat for too long as ``failed_stale``, which
  frees the slot.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from shared.store.guard import UpsertCounts
from shared.store.schema import ACTIVE_RUN_STATUSES, sync_runs

KINDS = ("full", "incremental", "hot")
FINAL_STATUSES = ("completed", "failed", "cancelled", "failed_stale")


class RunActive(Exception):
    """A run of this kind is already active for the tenant."""

    def __init__(self, tenant_id: str, kind: str, run_id: str | None) -> None:
        self.tenant_id, self.kind, self.run_id = tenant_id, kind, run_id
        super().__init__(f"tenant {tenant_id}: a {kind} reconcile is already running ({run_id})")


class LeaseLost(Exception):
    """The run was claimed by another worker, reaped or cancelled: stop without writing."""


@dataclass
class RunCounts:
    processed: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    deleted: int = 0
    errored: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def absorb(self, written: UpsertCounts) -> None:
        """Add what one upsert did (a resurrection is an update, for a run)."""
        self.inserted += written.inserted
        self.updated += written.updated + written.resurrected
        self.unchanged += written.unchanged
        self.stale += written.stale
        self.deleted += written.deleted


@dataclass(frozen=True)
class RunLease:
    run_id: str
    tenant_id: str
    kind: str
    fencing_token: int


def _now() -> datetime:
    return datetime.now(UTC)


def start_run(conn: Connection, tenant_id: str, kind: str, *, now: datetime | None = None,
              mode: str | None = None) -> RunLease:
    return RunLease(_insert_run(conn, tenant_id, kind, "running", now or _now(), mode), tenant_id, kind, 1)


def queue_run(conn: Connection, tenant_id: str, kind: str, *, now: datetime | None = None,
              mode: str | None = None) -> str:
    """A run an operator asked for: ``queued`` (holding the tenant's slot for that kind) until a
    worker claims it from its message. Raises RunActive naming the active run."""
    return _insert_run(conn, tenant_id, kind, "queued", now or _now(), mode)


def _insert_run(conn: Connection, tenant_id: str, kind: str, status: str, now: datetime,
                mode: str | None = None) -> str:
    """A new active run (running: fencing token 1, held by the caller; queued: 0, held by none)."""
    if kind not in KINDS:
        raise ValueError(f"unknown reconcile kind {kind!r}; one of {', '.join(KINDS)}")
    run_id = str(uuid.uuid4())
    savepoint = conn.begin_nested()
    try:
        conn.execute(insert(sync_runs).values(id=run_id, tenant_id=tenant_id, kind=kind, mode=mode, status=status,
                                              fencing_token=1 if status == "running" else 0, started_at=now,
                                              heartbeat_at=now, step="queued" if status == "queued" else None))
        savepoint.commit()
    except IntegrityError:
        savepoint.rollback()
        raise RunActive(tenant_id, kind, active_run(conn, tenant_id, kind)) from None
    return run_id


def end_run(conn: Connection, tenant_id: str, run_id: str, *, status: str = "cancelled",
            error: str = "cancelled by an operator", now: datetime | None = None) -> tuple[bool, str | None]:
    """End an active run of this tenant from outside (an operator's cancel, a queued run whose
    message could not be sent): (ended now, the run's status afterwards) — (False, its final
    status) when it had already finished, (False, None) when the tenant has no such run. A worker
    holding it loses its fenced writes at its next checkpoint and stops."""
    if status not in FINAL_STATUSES:
        raise ValueError(f"not a final status: {status!r}")
    c = sync_runs.c
    mine = (c.id == run_id) & (c.tenant_id == tenant_id)
    ended = conn.execute(update(sync_runs).where(mine, c.status.in_(ACTIVE_RUN_STATUSES)).values(
        status=status, finished_at=now or _now(), error=error)).rowcount == 1
    return ended, conn.execute(select(c.status).where(mine)).scalar()


def start_or_resume(conn: Connection, tenant_id: str, kind: str, *, stale_after: timedelta,
                    now: datetime | None = None, take_over: bool = False, mode: str | None = None) -> RunLease:
    """Start a run, or take over the active one when its worker went silent (crashed, killed)
    for ``stale_after``: the taker resumes from the checkpoint. A live run raises RunActive.

    ``take_over``: the message is a redelivery — the queue hands a message out again only when
    the invocation that had it died or gave up — so the active run it may have started has no
    live worker: take it over now rather than after ``stale_after``. Should its worker be alive
    after all, the fencing token shuts it out at its next checkpoint."""
    now = now or _now()
    try:
        return start_run(conn, tenant_id, kind, now=now, mode=mode)
    except RunActive as exc:
        c = sync_runs.c
        heartbeat = conn.execute(select(c.heartbeat_at).where(c.id == exc.run_id)).scalar()
        if exc.run_id is None or heartbeat is None or (heartbeat >= now - stale_after and not take_over):
            raise
        return claim(conn, exc.run_id, now=now)


def active_run(conn: Connection, tenant_id: str, kind: str) -> str | None:
    c = sync_runs.c
    return conn.execute(select(c.id).where(c.tenant_id == tenant_id, c.kind == kind,
                                           c.status.in_(ACTIVE_RUN_STATUSES))).scalar()


def claim(conn: Connection, run_id: str, *, now: datetime | None = None) -> RunLease:
    """Take over an active run (a continuation): bumps the fencing token; the old holder is out."""
    c = sync_runs.c
    row = conn.execute(select(c.tenant_id, c.kind, c.fencing_token, c.status).where(c.id == run_id)).first()
    if row is None or row.status not in ACTIVE_RUN_STATUSES:
        raise LeaseLost(f"run {run_id} is not active")
    token = row.fencing_token + 1
    changed = conn.execute(update(sync_runs).where(c.id == run_id, c.fencing_token == row.fencing_token,
                                                   c.status.in_(ACTIVE_RUN_STATUSES))
                           .values(fencing_token=token, status="running", heartbeat_at=now or _now())).rowcount
    if changed != 1:
        raise LeaseLost(f"run {run_id} was claimed by another worker")
    return RunLease(run_id, row.tenant_id, row.kind, token)


def _fenced(lease: RunLease) -> Any:
    c = sync_runs.c
    return (c.id == lease.run_id) & (c.fencing_token == lease.fencing_token) & (c.status == "running")


def checkpoint(conn: Connection, lease: RunLease, *, counts: RunCounts, position: dict[str, Any], step: str,
               records_total: int | None = None, now: datetime | None = None) -> None:
    """Record progress in the caller's transaction (with the page's rows): all or nothing."""
    changed = conn.execute(update(sync_runs).where(_fenced(lease)).values(
        checkpoint=json.dumps(position, separators=(",", ":")), step=step[:200], records_total=records_total,
        heartbeat_at=now or _now(), **counts.as_dict())).rowcount
    if changed != 1:
        raise LeaseLost(f"run {lease.run_id}: lost the run before checkpointing")


def load_position(conn: Connection, lease: RunLease) -> tuple[dict[str, Any], RunCounts]:
    c = sync_runs.c
    row = conn.execute(select(c.checkpoint, *(c[f.name] for f in fields(RunCounts))).where(c.id == lease.run_id)).one()
    position = json.loads(row.checkpoint) if row.checkpoint else {}
    return position, RunCounts(*row[1:])


def run_started_at(conn: Connection, lease: RunLease) -> datetime:
    return conn.execute(select(sync_runs.c.started_at).where(sync_runs.c.id == lease.run_id)).scalar_one()


def finish(conn: Connection, lease: RunLease, status: str, *, error: str | None = None,
           now: datetime | None = None) -> None:
    if status not in FINAL_STATUSES:
        raise ValueError(f"not a final status: {status!r}")
    changed = conn.execute(update(sync_runs).where(_fenced(lease)).values(
        status=status, error=error[:2000] if error else None, finished_at=now or _now())).rowcount
    if changed != 1:
        raise LeaseLost(f"run {lease.run_id}: lost the run before finishing")


def release(conn: Connection, lease: RunLease, *, stale_after: timedelta, now: datetime | None = None) -> bool:
    """Give up a run after an unexpected failure (the database went away mid-step, a bug): its
    heartbeat is set just past ``stale_after``, so the retried message takes it over at once and
    resumes from the checkpoint instead of finding it "already running" until it goes stale. Not
    as far back as the fan-out's reaper (four times as long). Returns whether the run was ours."""
    when = (now or _now()) - stale_after - timedelta(seconds=1)
    return conn.execute(update(sync_runs).where(_fenced(lease)).values(heartbeat_at=when)).rowcount == 1


def reap_stale(conn: Connection, *, older_than: timedelta, now: datetime | None = None) -> list[str]:
    """Mark running runs silent for ``older_than`` as failed_stale; returns their ids."""
    c = sync_runs.c
    cutoff = (now or _now()) - older_than
    stale = [r for (r,) in conn.execute(select(c.id).where(c.status.in_(ACTIVE_RUN_STATUSES), c.heartbeat_at < cutoff))]
    if stale:
        conn.execute(update(sync_runs).where(c.id.in_(stale), c.status.in_(ACTIVE_RUN_STATUSES)).values(
            status="failed_stale", finished_at=now or _now(), error="no heartbeat: the worker stopped"))
    return stale


def last_started(conn: Connection) -> dict[tuple[str, str], datetime]:
    """When each (tenant, kind) last started a run: what the fan-out measures schedules from. A
    sync mode's runs count as (tenant, "mode:NAME"), not as their kind's: a patients-only run does
    not put off the tenant's incremental run of everything."""
    c = sync_runs.c
    return {(tenant, kind if mode is None else f"mode:{mode}"): started for tenant, kind, mode, started in conn.execute(
        select(c.tenant_id, c.kind, c.mode, func.max(c.started_at)).group_by(c.tenant_id, c.kind, c.mode))}


def fully_loaded(conn: Connection) -> set[str]:
    """The tenants with a completed full run (the others get their full load before anything else)."""
    c = sync_runs.c
    return set(conn.execute(select(c.tenant_id).where(c.kind == "full", c.status == "completed")
                            .distinct()).scalars())
