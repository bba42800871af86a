"""Reconcile end to end: the sandbox over HTTP into SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from devtools.compare import live_in_snapshot, mirrored
from devtools.sandbox.data import SandboxData
from devtools.sandbox.server import Sandbox, SandboxConfig
from devtools.synthetic import SyntheticCounts
from shared.fhir.transform import TABLE_FOR_TYPE
from shared.settings import TenantConfig
from shared.source.breaker import MemoryBreakerStore
from shared.source.budget import RateBudget
from shared.source.registry import SourceRegistry
from shared.store import cursors
from shared.store.engine import write_transaction
from shared.store.runs import LeaseLost, RunLease, claim, load_position, start_run
from shared.store.schema import MIRRORED_TABLES, sync_runs
from shared.sync.reconcile import TYPE_ORDER, Progress, run_reconcile

NOW = datetime.now(UTC)


class Crash(BaseException):
    """A worker dying mid-run: not an error the run can record."""


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    data = SandboxData(SyntheticCounts(3, 60, 240, 50), seed=21, anchor=NOW)
    box = Sandbox(data, SandboxConfig(rate_limit=0)).start()
    yield box
    box.stop()


def tenant_for(box: Sandbox) -> TenantConfig:
    return TenantConfig(id="demo", name="Demo", fhir_base_url=box.base_url, client_id="sandbox-client",
                        client_secret="sandbox-secret")


def reconcile(engine: Engine, box: Sandbox, lease: RunLease, **kwargs: Any) -> bool:
    async def go() -> bool:
        async with httpx.AsyncClient() as http:
            client = SourceRegistry(http, MemoryBreakerStore()).client(tenant_for(box))
            client.budget = RateBudget(limit=10**9)
            return await run_reconcile(engine, client, tenant_for(box), lease, **kwargs)
    return asyncio.run(go())


def start(engine: Engine, kind: str = "incremental") -> RunLease:
    with write_transaction(engine) as conn:
        return start_run(conn, "demo", kind)


def mirror(engine: Engine) -> set[tuple[str, str, str]]:
    return mirrored(engine, "demo")


def truth(box: Sandbox) -> set[tuple[str, str, str]]:
    return live_in_snapshot(box.data.snapshot())


def test_incremental_mirrors_the_source_then_costs_one_request_per_type(engine: Engine, sandbox: Sandbox) -> None:
    assert reconcile(engine, sandbox, start(engine), page_size=25)
    assert mirror(engine) == truth(sandbox)
    with engine.connect() as conn:
        assert cursors.watermark(conn, "demo", "Appointment") is not None
        run = conn.execute(select(sync_runs)).one()
    total = len(truth(sandbox))
    assert (run.status, run.processed, run.inserted, run.errored) == ("completed", total, total, 0)
    before = sandbox.requests
    lease = start(engine)
    assert reconcile(engine, sandbox, lease, page_size=25)
    assert sandbox.requests - before == len(TYPE_ORDER) + 1  # one search per type, plus the new client's token
    with engine.connect() as conn:
        _position, counts = load_position(conn, lease)
    assert counts.processed == 0 and counts.inserted == counts.updated == 0


def test_changes_after_the_first_run_arrive_with_the_next_window(engine: Engine, sandbox: Sandbox) -> None:
    assert reconcile(engine, sandbox, start(engine), page_size=50)
    sandbox.data.churn(creates=5, updates=10, deletes=0)
    later = lambda: datetime.now(UTC) + timedelta(minutes=3)  # past the 2-minute lag
    assert reconcile(engine, sandbox, start(engine), page_size=50, now=later)
    assert mirror(engine) == truth(sandbox)


def test_a_spent_time_budget_stops_after_a_checkpoint_and_a_continuation_finishes(engine: Engine,
                                                                                  sandbox: Sandbox) -> None:
    lease = start(engine)
    ticks = itertools.count()
    assert reconcile(engine, sandbox, lease, page_size=20, deadline=3, clock=lambda: next(ticks)) is False
    with write_transaction(engine) as conn:
        continuation = claim(conn, lease.run_id)
    assert reconcile(engine, sandbox, continuation, page_size=20)
    assert mirror(engine) == truth(sandbox)
    with engine.connect() as conn:
        _position, counts = load_position(conn, continuation)
    assert counts.processed == len(truth(sandbox))  # nothing read twice, nothing skipped


def test_a_crash_anywhere_resumes_from_the_checkpoint_without_loss(engine: Engine, sandbox: Sandbox) -> None:
    lease = start(engine)
    pages = itertools.count(1)

    def crash_on_seventh(progress: Progress) -> None:
        if next(pages) == 7:
            raise Crash()

    with pytest.raises(Crash):
        reconcile(engine, sandbox, lease, page_size=20, on_progress=crash_on_seventh)
    with engine.connect() as conn:
        assert conn.execute(select(sync_runs.c.status)).scalar_one() == "running"  # as a dead worker leaves it
    with write_transaction(engine) as conn:
        resumed = claim(conn, lease.run_id)
    assert reconcile(engine, sandbox, resumed, page_size=20)
    assert mirror(engine) == truth(sandbox)
    with engine.connect() as conn:
        _position, counts = load_position(conn, resumed)
    assert counts.processed == len(truth(sandbox))


def test_a_worker_that_lost_its_run_writes_nothing_more(engine: Engine, sandbox: Sandbox) -> None:
    lease = start(engine)
    ticks = itertools.count()
    reconcile(engine, sandbox, lease, page_size=20, deadline=2, clock=lambda: next(ticks))
    written = mirror(engine)
    with write_transaction(engine) as conn:
        claim(conn, lease.run_id)  # another worker took over
    with pytest.raises(LeaseLost):
        reconcile(engine, sandbox, lease, page_size=20)
    assert mirror(engine) == written  # its page was rolled back with the refused checkpoint


def test_records_leaving_a_window_mid_read_do_not_hide_others(engine: Engine, sandbox: Sandbox) -> None:
    """Updates during paging shift the pages; the total guard re-reads so no record is skipped."""
    rng = random.Random(4)
    patients = [e["id"] for e in sandbox.data.snapshot() if e["type"] == "Patient"]
    touched: set[str] = set()

    def churn_patients(progress: Progress) -> None:
        if progress.step.startswith("Patient") and len(touched) < 20:
            with sandbox.data.lock:
                for pid in rng.sample(patients[:30], 4):  # records on pages not yet read
                    stored = sandbox.data.by_type["Patient"][pid]
                    resource = dict(stored.resource)
                    sandbox.data.write(resource, datetime.now(UTC) + timedelta(seconds=len(touched)),
                                      stored.version + 1)
                    touched.add(pid)

    assert reconcile(engine, sandbox, start(engine), page_size=10, on_progress=churn_patients)
    stored_ids = {sid for kind, sid, _v in mirror(engine) if kind == "Patient"}
    untouched = set(patients) - touched
    assert touched and untouched <= stored_ids  # every record that stayed in the window is here


def test_a_window_that_keeps_shifting_keeps_its_watermark(engine: Engine, sandbox: Sandbox) -> None:
    """Churn on every page outlasts the re-reads: the watermark stays, so the next run reads again."""
    rng = random.Random(9)
    patients = [e["id"] for e in sandbox.data.snapshot() if e["type"] == "Patient"]

    def churn_always(progress: Progress) -> None:
        if progress.step.startswith("Patient"):
            with sandbox.data.lock:
                pid = rng.choice(patients)
                stored = sandbox.data.by_type["Patient"][pid]
                sandbox.data.write(dict(stored.resource), datetime.now(UTC), stored.version + 1)

    assert reconcile(engine, sandbox, start(engine), page_size=10, on_progress=churn_always)
    with engine.connect() as conn:
        assert cursors.watermark(conn, "demo", "Patient") is None  # not advanced past a suspect window
        assert cursors.watermark(conn, "demo", "Appointment") is not None


def deleted_ids(engine: Engine, table: str) -> set[str]:
    t = MIRRORED_TABLES[table]
    with engine.connect() as conn:
        return {sid for (sid,) in conn.execute(select(t.c.source_id).where(t.c.deleted_at.is_not(None)))}


def test_full_reconcile_tombstones_what_the_source_deleted(engine: Engine, sandbox: Sandbox) -> None:
    assert reconcile(engine, sandbox, start(engine, "full"), page_size=50)
    gone = sandbox.data.churn(deletes=6)
    later = lambda: datetime.now(UTC) + timedelta(minutes=3)
    lease = start(engine, "full")
    assert reconcile(engine, sandbox, lease, page_size=50, now=later)
    for change in gone:
        assert change.id in deleted_ids(engine, TABLE_FOR_TYPE[change.type])
    assert mirror(engine) == truth(sandbox)
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs).where(sync_runs.c.id == lease.run_id)).one()
        assert (run.status, run.deleted, run.error) == ("completed", 6, None)
        from shared.store.schema import sync_seen
        assert conn.execute(select(sync_seen)).first() is None  # cleaned up


def test_a_record_the_listing_missed_is_confirmed_not_deleted(engine: Engine, sandbox: Sandbox) -> None:
    assert reconcile(engine, sandbox, start(engine, "full"), page_size=50)
    hidden = "PT-2000007"
    sandbox.config.faults.hidden = {hidden}  # the listing misses it; reading it by id finds it
    later = lambda: datetime.now(UTC) + timedelta(minutes=3)
    lease = start(engine, "full")
    assert reconcile(engine, sandbox, lease, page_size=50, now=later)
    assert hidden not in deleted_ids(engine, "clients")  # read directly: it exists
    with engine.connect() as conn:
        assert conn.execute(select(sync_runs.c.deleted).where(sync_runs.c.id == lease.run_id)).scalar_one() == 0


def test_mass_disappearance_is_refused_and_recorded(engine: Engine, sandbox: Sandbox) -> None:
    assert reconcile(engine, sandbox, start(engine, "full"), page_size=50)
    appointments = [e["id"] for e in sandbox.data.snapshot() if e["type"] == "Appointment"][:60]
    with sandbox.data.lock:  # a quarter of the appointments vanish from the source at once
        for aid in appointments:
            stored = sandbox.data.by_type["Appointment"][aid]
            sandbox.data.order["Appointment"].remove((stored.updated, aid))
            stored.deleted_at = datetime.now(UTC)
    later = lambda: datetime.now(UTC) + timedelta(minutes=3)
    lease = start(engine, "full")
    assert reconcile(engine, sandbox, lease, page_size=50, now=later)
    assert deleted_ids(engine, "sessions") == set()
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs).where(sync_runs.c.id == lease.run_id)).one()
    assert run.status == "completed" and run.deleted == 0
    assert "Appointment: 60 of 240 rows missing from the listing, over the cap of 12; nothing deleted" in run.error


def test_rows_changed_after_the_run_started_are_not_candidates(engine: Engine, sandbox: Sandbox) -> None:
    from shared.records import MirrorRow
    from shared.store.mirror import write_rows

    assert reconcile(engine, sandbox, start(engine, "full"), page_size=50)
    with write_transaction(engine) as conn:  # a webhook stored this during the next run
        write_rows(conn, "demo", [MirrorRow("sessions", "AP-from-webhook", datetime.now(UTC) + timedelta(hours=1),
                                            "1", {"status": "booked"})])
        write_rows(conn, "demo", [MirrorRow("sessions", "AP-orphan", datetime(2020, 1, 1, tzinfo=UTC), "1",
                                            {"status": "booked"})])
    later = lambda: datetime.now(UTC) + timedelta(minutes=3)
    assert reconcile(engine, sandbox, start(engine, "full"), page_size=50, now=later)
    assert deleted_ids(engine, "sessions") == {"AP-orphan"}  # unknown at the source (404), and old


def test_changes_the_webhooks_did_not_bring_are_recorded_as_silence(engine: Engine, sandbox: Sandbox) -> None:
    from shared.queues.messages import ChangeMessage
    from shared.store.metrics import read_metrics
    from shared.store.schema import webhook_silence
    from shared.sync.apply import apply_change
    from shared.sync.silence import SilenceCheck

    later = datetime.now(UTC) + timedelta(minutes=3)  # past the 2-minute lag
    check = SilenceCheck(frozenset({"Patient", "Appointment", "Invoice"}), cutoff=later)
    assert reconcile(engine, sandbox, start(engine), page_size=50, silence=check)  # first sync: nothing missed
    changes = list(sandbox.data.churn(creates=6, updates=12, deletes=0))
    # One change arrives by webhook (applied before the reconcile): not silence.
    by_hook = next(c for c in changes if c.type == "Appointment")

    async def apply() -> None:
        async with httpx.AsyncClient() as http:
            client = SourceRegistry(http, MemoryBreakerStore()).client(tenant_for(sandbox))
            await apply_change(engine, client, ChangeMessage(tenant="demo", type="Appointment", id=by_hook.id))
    asyncio.run(apply())
    lease = start(engine)
    assert reconcile(engine, sandbox, lease, page_size=50, now=lambda: later, silence=check)
    missed: dict[str, set[str]] = {}
    for c in changes:
        if c.type in check.types and (c.type, c.id) != (by_hook.type, by_hook.id):  # referrals have no webhooks
            missed.setdefault(c.type, set()).add(c.id)
    with engine.connect() as conn:
        rows = {r.resource_type: r for r in conn.execute(select(webhook_silence))}
        counted = read_metrics(conn, "demo")
    assert {t: r.changes for t, r in rows.items()} == {t: len(ids) for t, ids in missed.items()}
    assert all(r.last_run_id == lease.run_id for r in rows.values())
    assert counted["webhook.silent_changes"] == sum(len(ids) for ids in missed.values())
    # A run without webhooks configured (no check) records nothing more.
    sandbox.data.churn(creates=3, updates=0, deletes=0)
    assert reconcile(engine, sandbox, start(engine), page_size=50, now=lambda: later + timedelta(minutes=1))
    with engine.connect() as conn:
        assert sum(r.changes for r in conn.execute(select(webhook_silence))) == sum(len(i) for i in missed.values())
