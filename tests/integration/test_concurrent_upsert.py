"""Concurrent writers of the same keys: no unique violation or deadlock escapes, the newest wins."""
from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from shared.records import MirrorRow
from shared.settings import load_settings
from shared.store.engine import create_store_engine, write_transaction
from shared.store.guard import UpsertCounts
from shared.store.schema import sessions
from shared.store.upsert import upsert_rows

T0 = datetime(2025, 1, 1, tzinfo=UTC)
KEYS = [f"AP-{i}" for i in range(300)]
WRITERS, BATCHES, BATCH = 8, 15, 150


def version_row(key: str, version: int) -> MirrorRow:
    # Status and time derive from the version, so the stored row shows which version won.
    return MirrorRow("sessions", key, T0 + timedelta(seconds=version), str(version),
                     {"status": f"v{version}", "start_at": T0})


def run_writers(engine: Engine, seed: int) -> tuple[list[BaseException], UpsertCounts, dict[str, int], int]:
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []
    totals = UpsertCounts()
    newest: dict[str, int] = {}
    lock = threading.Lock()
    sent = 0

    def writer(n: int) -> None:
        nonlocal sent
        rng = random.Random(seed * 100 + n)
        batches = []
        for _ in range(BATCHES):
            keys = rng.sample(KEYS, BATCH)  # overlapping keys, each writer in its own order
            batches.append([version_row(k, rng.randrange(1, 50)) for k in keys])
        with lock:
            for batch in batches:
                sent += len(batch)
                for r in batch:
                    newest[r.source_id] = max(newest.get(r.source_id, 0), int(r.source_version or 0))
        barrier.wait()
        try:
            for batch in batches:
                with write_transaction(engine) as conn:
                    counts = upsert_rows(conn, "t1", batch)
                with lock:
                    totals.__iadd__(counts)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors, totals, newest, sent


def check_newest_stored(engine: Engine, newest: dict[str, int]) -> None:
    with engine.connect() as conn:
        got = {k: (v, s) for k, v, s in conn.execute(
            select(sessions.c.source_id, sessions.c.source_version, sessions.c.status))}
    assert set(got) == set(newest)
    wrong = {k: got[k] for k, v in newest.items() if got[k] != (str(v), f"v{v}")}
    assert wrong == {}, f"{len(wrong)} keys do not hold their newest version"


@pytest.mark.postgres
def test_concurrent_writers_on_postgresql(postgresql_clean: str) -> None:
    engine = create_store_engine(load_settings(database_url=postgresql_clean))
    try:
        errors, totals, newest, sent = run_writers(engine, seed=1)
        assert errors == []
        assert totals.total == sent  # every row accounted for exactly once
        assert totals.inserted == len(newest)  # each key inserted once, whoever won the race
        check_newest_stored(engine, newest)
    finally:
        engine.dispose()


def test_concurrent_writers_on_sqlite(sqlite_url: str) -> None:
    engine = create_store_engine(load_settings(database_url=sqlite_url))
    try:
        errors, totals, newest, sent = run_writers(engine, seed=2)
        assert errors == []
        assert totals.total == sent and totals.inserted == len(newest)
        check_newest_stored(engine, newest)
    finally:
        engine.dispose()
