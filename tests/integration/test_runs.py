"""Reconcile runs on SQLite and PostgreSQL: one active run per kind, fencing, reaping, cursors."""
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from shared.store import cursors
from shared.store.engine import write_transaction
from shared.store.runs import (
    LeaseLost,
    RunActive,
    RunCounts,
    checkpoint,
    claim,
    finish,
    load_position,
    reap_stale,
    start_or_resume,
    start_run,
)
from shared.store.schema import sync_runs

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def status(engine: Engine, run_id: str) -> str:
    with engine.connect() as conn:
        return conn.execute(select(sync_runs.c.status).where(sync_runs.c.id == run_id)).scalar_one()


def test_one_active_run_per_tenant_and_kind(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        first = start_run(conn, "t1", "full")
    with pytest.raises(RunActive) as caught, write_transaction(engine) as conn:
        start_run(conn, "t1", "full")
    assert caught.value.run_id == first.run_id
    with write_transaction(engine) as conn:
        start_run(conn, "t1", "incremental")  # another kind
        start_run(conn, "t2", "full")  # another tenant
        finish(conn, first, "completed")
        start_run(conn, "t1", "full")  # the slot is free again
    with pytest.raises(ValueError, match="unknown reconcile kind"), write_transaction(engine) as conn:
        start_run(conn, "t1", "weekly")


def test_racing_starts_let_exactly_one_run(engine: Engine) -> None:
    barrier, outcomes = threading.Barrier(6), []

    def racer() -> None:
        barrier.wait()
        try:
            with write_transaction(engine) as conn:
                outcomes.append(start_run(conn, "race", "full").run_id)
        except RunActive as exc:
            outcomes.append(f"refused:{exc.run_id}")

    threads = [threading.Thread(target=racer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [o for o in outcomes if not o.startswith("refused")]
    assert len(outcomes) == 6 and len(winners) == 1
    assert all(o in ("refused:" + winners[0], "refused:None") for o in outcomes if o.startswith("refused"))


def test_a_continuation_fences_out_the_previous_holder(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        old = start_run(conn, "t1", "full", now=T0)
        checkpoint(conn, old, counts=RunCounts(processed=100, inserted=100), position={"type": 0, "page": 2},
                   step="Patient page 2", records_total=500)
    with write_transaction(engine) as conn:
        new = claim(conn, old.run_id)
    assert new.fencing_token == old.fencing_token + 1
    with pytest.raises(LeaseLost), write_transaction(engine) as conn:
        checkpoint(conn, old, counts=RunCounts(processed=999), position={"bogus": True}, step="stale")
    with write_transaction(engine) as conn:
        position, counts = load_position(conn, new)
        assert position == {"type": 0, "page": 2} and counts.processed == 100 and counts.inserted == 100
        checkpoint(conn, new, counts=RunCounts(processed=200, inserted=150, unchanged=50), position={"type": 1},
                   step="Appointment page 1")
    with pytest.raises(LeaseLost), write_transaction(engine) as conn:
        finish(conn, old, "completed")
    with write_transaction(engine) as conn:
        finish(conn, new, "completed")
    assert status(engine, new.run_id) == "completed"
    with pytest.raises(LeaseLost), write_transaction(engine) as conn:
        claim(conn, new.run_id)  # finished runs are not continued


def test_reaper_frees_the_slot_of_a_silent_run(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        silent = start_run(conn, "t1", "full", now=T0)
        done = start_run(conn, "t1", "hot", now=T0)
        finish(conn, done, "completed", now=T0)
        alive = start_run(conn, "t2", "full", now=T0 + timedelta(minutes=9))
    with write_transaction(engine) as conn:
        reaped = reap_stale(conn, older_than=timedelta(minutes=5), now=T0 + timedelta(minutes=10))
    assert reaped == [silent.run_id]
    assert (status(engine, silent.run_id), status(engine, done.run_id), status(engine, alive.run_id)) == (
        "failed_stale", "completed", "running")
    with pytest.raises(LeaseLost), write_transaction(engine) as conn:
        checkpoint(conn, silent, counts=RunCounts(), position={}, step="too late")
    with write_transaction(engine) as conn:
        start_run(conn, "t1", "full")


def test_watermarks_only_move_forward(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        assert cursors.watermark(conn, "t1", "Patient") is None
        cursors.advance(conn, "t1", "Patient", T0)
        cursors.advance(conn, "t1", "Patient", T0 - timedelta(hours=1))
        cursors.advance(conn, "t1", "Appointment", T0 - timedelta(days=1))
    with engine.connect() as conn:
        assert cursors.watermark(conn, "t1", "Patient") == T0
        assert cursors.watermark(conn, "t1", "Appointment") == T0 - timedelta(days=1)
    with write_transaction(engine) as conn:
        cursors.advance(conn, "t1", "Patient", T0 + timedelta(minutes=5))
    with engine.connect() as conn:
        assert cursors.watermark(conn, "t1", "Patient") == T0 + timedelta(minutes=5)


def test_a_silent_run_is_taken_over_and_resumes_its_checkpoint_a_live_one_is_not(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        dead = start_run(conn, "t1", "full", now=T0)
        checkpoint(conn, dead, counts=RunCounts(processed=300), position={"type": "Appointment", "page": 3},
                   step="Appointment", now=T0)
    with pytest.raises(RunActive), write_transaction(engine) as conn:  # heartbeat 10 min old: still alive
        start_or_resume(conn, "t1", "full", stale_after=timedelta(minutes=15), now=T0 + timedelta(minutes=10))
    with write_transaction(engine) as conn:
        taken = start_or_resume(conn, "t1", "full", stale_after=timedelta(minutes=15), now=T0 + timedelta(minutes=16))
    assert taken.run_id == dead.run_id and taken.fencing_token == dead.fencing_token + 1
    with engine.connect() as conn:
        position, counts = load_position(conn, taken)
    assert position == {"type": "Appointment", "page": 3} and counts.processed == 300
    with pytest.raises(LeaseLost), write_transaction(engine) as conn:  # the dead worker, if it wakes, is out
        checkpoint(conn, dead, counts=RunCounts(), position={}, step="x")


def test_a_redelivered_message_takes_the_run_over_at_once(engine: Engine) -> None:
    """The queue hands a message out again only when its invocation died: the run that
    invocation started has no worker, however fresh its heartbeat (a crash mid-page)."""
    with write_transaction(engine) as conn:
        crashed = start_run(conn, "t1", "full", now=T0)
        checkpoint(conn, crashed, counts=RunCounts(processed=40), position={"type": "Patient", "page": 1},
                   step="Patient", now=T0 + timedelta(seconds=5))
    later = T0 + timedelta(seconds=30)
    with pytest.raises(RunActive), write_transaction(engine) as conn:  # a first delivery: the run is live
        start_or_resume(conn, "t1", "full", stale_after=timedelta(minutes=15), now=later)
    with write_transaction(engine) as conn:
        taken = start_or_resume(conn, "t1", "full", stale_after=timedelta(minutes=15), now=later, take_over=True)
    assert taken.run_id == crashed.run_id and taken.fencing_token == crashed.fencing_token + 1
    with pytest.raises(LeaseLost), write_transaction(engine) as conn:  # should the old worker live, it is out
        checkpoint(conn, crashed, counts=RunCounts(), position={}, step="x")
