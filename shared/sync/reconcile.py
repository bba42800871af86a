"""Reconcile one tenant from its source: incremental windows, the hot window, or everything.

One page, one transaction: a page's rows and the run's checkpoint commit together (and the
window's last page also moves the watermark), so a run stopped anywhere — a crash, a lost
lease, a spent time budget — resumes from its checkpoint and loses nothing.

The source is anything that speaks the source protocol (shared/source/protocol.py): FHIR or a
declarative REST source. Offset paging guard: if the listing's stated total drops while a window
is read, a record left the window and every later one shifted towards the front, so a page
already read may have swallowed one; the window is read again from its first page (see
docs/reconcile.md).
A full run records the ids it lists and, once every type listed without error, detects
deletions (shared/sync/deletes.py): confirmed one by one, refused above a cap.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from shared.records import RESOURCE_TYPES
from shared.settings import TenantConfig
from shared.source.budget import BULK
from shared.source.protocol import Mapped, Page, Source, Window
from shared.store import cursors
from shared.store.declared import refuse_repeats, unique_columns
from shared.store.engine import write_transaction
from shared.store.guard import UpsertCounts
from shared.store.mirror import write_rows
from shared.store.runs import RunCounts, RunLease, checkpoint, finish, load_position, run_started_at
from shared.store.seen import forget_seen, record_seen, unseen_live_ids
from shared.store.silence import record_silence
from shared.sync.deletes import detect_deletes
from shared.sync.silence import SilenceCheck
from shared.telemetry import telemetry

log = logging.getLogger("shared.sync")
TYPE_ORDER = RESOURCE_TYPES  # a FHIR source's entities, in the order it lists them
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LAG = timedelta(minutes=2)
MAX_WINDOW_RESTARTS = 3
WRITE_BATCH = 1000  # rows per upsert statement; a page commits whole, with its checkpoint


@dataclass
class Progress:
    run_id: str
    step: str
    done: int
    total: int | None


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def plan_types(source: Source, kind: str, only: Sequence[str] | None = None) -> tuple[str, ...]:
    types = source.entities(kind)
    return tuple(t for t in types if t in only) if only else types


def incremental_window(watermark: datetime, now: datetime) -> tuple[datetime, datetime] | None:
    """The next half-open window [watermark, now - LAG), or None when it would be empty: a change
    committed at the source just before ``now`` may not be visible to a search yet."""
    end = now - LAG
    return (watermark, end) if end > watermark else None


def hot_window(tenant: TenantConfig, now: datetime) -> tuple[datetime, datetime]:
    """Yesterday 00:00 to 8 days later 00:00 in the tenant's timezone (today + 7 days ahead)."""
    local = now.astimezone(ZoneInfo(tenant.timezone))
    today = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return (today - timedelta(days=1)).astimezone(UTC), (today + timedelta(days=8)).astimezone(UTC)


async def run_reconcile(engine: Engine, client: Source, tenant: TenantConfig, lease: RunLease, *,
                        deadline: float | None = None, clock: Callable[[], float] = time.monotonic,
                        now: Callable[[], datetime] = lambda: datetime.now(UTC), page_size: int | None = None,
                        on_progress: Callable[[Progress], None] | None = None,
                        only: Sequence[str] | None = None, since: datetime | None = None,
                        silence: SilenceCheck | None = None) -> bool:
    """Work on the run until it completes (True) or ``deadline`` passes after a checkpoint (False).

    ``only`` narrows a new run to some entities and ``since`` starts a new incremental
    run's windows there instead of at the watermarks (a replay); both are kept in its checkpoint,
    so continuations keep to them. ``silence`` looks for changes webhooks should have brought
    (sync/silence.py).
    Source failures end the run as ``failed`` with the reason recorded, and re-raise."""
    with engine.connect() as conn:
        position, counts = load_position(conn, lease)
    fresh = not position
    if fresh and only and lease.kind != "full":  # a full run lists everything: deletes depend on it
        position["only"] = [t for t in client.entities("full") if t in only]
    if fresh and since is not None and lease.kind == "incremental":
        position["since"] = _iso(since)
    position.setdefault("type", 0)
    types = plan_types(client, lease.kind, position.get("only"))
    page_size = page_size or client.page_size()
    try:
        while True:
            if not await _list_types(engine, client, tenant, lease, types, position, counts, page_size, deadline,
                                     clock, now, on_progress, silence):
                return False
            if lease.kind != "full" or "second" in position:
                break
            second = _needs_second_listing(engine, client, tenant, lease, types, position)
            if not second:
                break
            log.info("reconcile tenant=%s kind=full run=%s outcome=listing-again entities=%s: live rows missing from "
                     "the listing, and no single-record read to confirm them", tenant.id, lease.run_id, ",".join(second))
            position = {"type": 0, "base": counts.processed, "second": second,
                        **({"unsure": position["unsure"]} if position.get("unsure") else {})}
            with write_transaction(engine) as conn:
                checkpoint(conn, lease, counts=counts, position=position,
                           step=f"listing again: {', '.join(second)} (records missing from the first listing)")
        alert = await _detect_deletes(engine, client, tenant, lease, counts, position) if lease.kind == "full" else None
    except Exception as exc:
        with write_transaction(engine) as conn:
            forget_seen(conn, lease.run_id)
            finish(conn, lease, "failed", error=str(exc))
        raise
    with write_transaction(engine) as conn:
        forget_seen(conn, lease.run_id)
        finish(conn, lease, "completed", error=alert)
    return True


async def _list_types(engine: Engine, client: Source, tenant: TenantConfig, lease: RunLease,
                      types: Sequence[str], position: dict[str, Any], counts: RunCounts, page_size: int,
                      deadline: float | None, clock: Callable[[], float], now: Callable[[], datetime],
                      on_progress: Callable[[Progress], None] | None, silence: SilenceCheck | None) -> bool:
    """Read each type's window from ``position`` on (on a full run's second listing, only the
    types it names); False when ``deadline`` passed after a checkpoint. Updates ``position``."""
    while position["type"] < len(types):
        resource_type = types[position["type"]]
        if resource_type not in position.get("second", types):
            _replace(position, _next_type(position, counts))
            continue
        if "end" not in position:
            opened = _open_window(engine, tenant, lease.kind, resource_type, position, now())
            if opened is None:  # nothing to read in this window
                _replace(position, _next_type(position, counts))
                continue
            _replace(position, opened)
        if not await _read_window(engine, client, tenant, lease, resource_type, position, counts,
                                  page_size, deadline, clock, on_progress, silence):
            return False
        # _read_window left ``position`` at the next type, as its last checkpoint says.
        if deadline is not None and clock() >= deadline and position["type"] < len(types):
            return False
    return True


def _replace(position: dict[str, Any], new: dict[str, Any]) -> None:
    position.clear()
    position.update(new)


def _needs_second_listing(engine: Engine, client: Source, tenant: TenantConfig, lease: RunLease,
                          types: Sequence[str], position: dict[str, Any]) -> list[str]:
    """The types a full run lists a second time before it detects deletions: those without a
    single-record read whose first listing missed live rows. A paged listing can skip a record
    without the source's total showing it (a deletion ahead of it while creates keep the total
    up), and nothing else could confirm such a candidate: a record is taken for deleted only when
    both listings missed it (docs/reconcile.md)."""
    unsure = {types[i] for i in position.get("unsure", []) if i < len(types)}
    second = []
    with engine.connect() as conn:
        started_at = run_started_at(conn, lease)
        for resource_type in types:
            if resource_type in unsure or client.readable(resource_type):
                continue
            ids, _ = unseen_live_ids(conn, tenant.id, lease.run_id, client.table(resource_type), resource_type,
                                     started_at)
            if ids:
                second.append(resource_type)
    return second


async def _detect_deletes(engine: Engine, client: Source, tenant: TenantConfig, lease: RunLease,
                          counts: RunCounts, position: dict[str, Any]) -> str | None:
    """Runs after the whole listing succeeded; returns an alert when a cap refused deletions, or
    when a type's listing kept shifting (``unsure``: it may have skipped records) and its
    deletions were not looked for."""
    types = client.entities("full")
    unsure = [types[i] for i in position.get("unsure", []) if i < len(types)]
    with engine.connect() as conn:
        started_at = run_started_at(conn, lease)
    alerts = [f"{t}: the listing kept shifting while it was read; deletions not detected this run"
              for t in unsure]
    for resource_type in types:
        if resource_type in unsure:
            continue
        report = await detect_deletes(engine, client, tenant.id, lease.run_id, resource_type, started_at)
        counts.deleted += report.deleted
        counts.updated += report.restored
        telemetry().records_synced(tenant.id, resource_type, lease.kind, report.deleted + report.restored)
        if report.refused:
            alerts.append(report.refused)
        with write_transaction(engine) as conn:
            checkpoint(conn, lease, counts=counts, position={**position, "type": len(types), "deletes": resource_type},
                       step=f"delete detection: {resource_type}")
    return "; ".join(alerts) or None


def _open_window(engine: Engine, tenant: TenantConfig, kind: str, resource_type: str, position: dict[str, Any],
                 now: datetime) -> dict[str, Any] | None:
    if kind == "incremental":
        with engine.connect() as conn:
            start = cursors.watermark(conn, tenant.id, resource_type) or EPOCH
        if position.get("since"):  # a replay re-reads from there (the watermark never moves back)
            start = datetime.fromisoformat(position["since"])
        window = incremental_window(start, now)
        if window is None:
            return None
        start, end = window
    elif kind == "hot":
        start, end = hot_window(tenant, now)
    else:
        start, end = EPOCH, now - LAG
    return {**position, "start": _iso(start), "end": _iso(end), "next": None, "total": None, "restarts": 0}


def _window(client: Source, kind: str, resource_type: str, position: dict[str, Any]) -> Window | None:
    """What to ask the source for: everything on a full run, and on an incremental one from a
    source that cannot filter by change (it is listed whole and diffed by content hash)."""
    if kind == "full" or not client.filters_changes(resource_type):
        return None
    return Window(datetime.fromisoformat(position["start"]), datetime.fromisoformat(position["end"]),
                  "date" if kind == "hot" else "updated")


async def _read_window(engine: Engine, client: Source, tenant: TenantConfig, lease: RunLease, resource_type: str,
                       position: dict[str, Any], counts: RunCounts, page_size: int, deadline: float | None,
                       clock: Callable[[], float], on_progress: Callable[[Progress], None] | None,
                       silence: SilenceCheck | None) -> bool:
    window = _window(client, lease.kind, resource_type, position)
    while True:
        pages = client.listing(resource_type, window, resume=position["next"], page_size=page_size, priority=BULK)
        fetch: asyncio.Future[Page] | None = asyncio.ensure_future(anext(pages))
        restart = False
        try:
            while fetch is not None:
                try:
                    page = await fetch
                except StopAsyncIteration:
                    break
                fetch = None
                total, next_url = page.total, page.resume
                shifted = position["total"] is not None and total is not None and total < position["total"]
                if shifted and position["restarts"] < MAX_WINDOW_RESTARTS:
                    restart = True  # records left the window mid-read: read it again from page 1
                elif shifted:
                    position["suspect"] = True  # still moving: keep the watermark, the next run re-reads
                last_page = next_url is None and not restart
                stop = not last_page and not restart and deadline is not None and clock() >= deadline
                if next_url is not None and not restart and not stop:
                    # Fetch the next page while this one is mapped and written in a worker thread.
                    fetch = asyncio.ensure_future(anext(pages))
                records_total = await asyncio.to_thread(
                    _commit_page, engine, tenant, lease, resource_type, page.map, position, counts,
                    total, next_url, restart, last_page, silence)
                if on_progress is not None:
                    on_progress(Progress(lease.run_id, position.get("step", resource_type), counts.processed,
                                         records_total))
                if restart:
                    break
                if stop:
                    return False
        finally:
            if fetch is not None:  # stopping with a page in flight: let it finish cancelling first
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fetch
            await pages.aclose()
        if not restart:
            return True


def _commit_page(engine: Engine, tenant: TenantConfig, lease: RunLease, resource_type: str,
                 mapper: Callable[[], Mapped], position: dict[str, Any], counts: RunCounts, total: int | None,
                 next_url: Any | None, restart: bool, last_page: bool, silence: SilenceCheck | None = None) -> int:
    """Map one page and commit its rows with the checkpoint; updates ``position`` in place."""
    mapped = mapper()
    counts.processed += mapped.processed
    counts.errored += mapped.errored
    rows = mapped.rows
    if last_page:  # the window is done: the checkpoint points at the next type
        new_position: dict[str, Any] = _next_type(position, counts)
    else:
        new_position = {**position, "next": None if restart else next_url,
                        "total": None if restart else (total if position["total"] is None else position["total"]),
                        "restarts": position["restarts"] + restart}
    again = " (listed again)" if position.get("second") else ""
    step = f"{resource_type}{again}: {counts.processed - position.get('base', 0):,} of {total or '?'}"
    records_total = position.get("base", 0) + (total or 0)
    written: list[tuple[str, str, datetime]] | None = (
        [] if silence is not None and resource_type in silence.types else None)
    missed = 0
    unique = unique_columns(tenant, resource_type)
    with write_transaction(engine) as conn:
        if unique:  # before any write: a page that repeats them is rolled back whole
            refuse_repeats(conn, tenant.id, resource_type, rows, unique, "nothing from this page was written")
        since = cursors.watermark(conn, tenant.id, resource_type) if written is not None else None
        page = UpsertCounts()
        for start in range(0, len(rows), WRITE_BATCH):  # a 10,000-record page (PEMS) in statements of 1,000
            page += write_rows(conn, tenant.id, rows[start:start + WRITE_BATCH], changed=written)
        counts.absorb(page)
        if written and silence is not None:
            missed = record_silence(conn, tenant.id, lease.run_id, resource_type, written, since, silence.cutoff,
                                    datetime.now(UTC))
        if lease.kind == "full":
            record_seen(conn, lease.run_id, resource_type, [r.source_id for r in rows])
        # A window read to its end without shifting moves the watermark; a full listing is a
        # window from the beginning, so it counts too.
        if last_page and lease.kind in ("incremental", "full") and not position.get("suspect"):
            cursors.advance(conn, tenant.id, resource_type, datetime.fromisoformat(position["end"]))
        checkpoint(conn, lease, counts=counts, position=new_position, step=step, records_total=records_total)
    instruments = telemetry()  # after the commit: a rolled-back page counts nothing
    instruments.records_synced(tenant.id, resource_type, lease.kind, page.written)
    instruments.silent_changes(tenant.id, resource_type, missed)
    position.clear()
    position.update(new_position, step=step)
    return records_total


def _next_type(position: dict[str, Any], counts: RunCounts) -> dict[str, Any]:
    following = {"type": position["type"] + 1, "base": counts.processed}
    # A window whose listing kept shifting past its restarts may have skipped records: a full run
    # must not take them for deleted (the indices of such types, for _detect_deletes).
    unsure = [*position.get("unsure", []), *([position["type"]] if position.get("suspect") else [])]
    return {**following, **{k: position[k] for k in ("only", "since", "second") if position.get(k)},
            **({"unsure": unsure} if unsure else {})}
