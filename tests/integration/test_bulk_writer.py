"""BulkWriter: batches in order, counts summed, roles resolved, errors surfaced, aborts clean."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from shared.records import MirrorRow
from shared.store.bulk import BulkWriter
from shared.store.schema import sessions

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def session(n: int, version: int = 1, **content: object) -> MirrorRow:
    return MirrorRow("sessions", f"AP-{n}", T0 + timedelta(minutes=version), str(version),
                     {"status": "booked", "start_at": T0, **content})


def stored(engine: Engine) -> dict[str, tuple[object, ...]]:
    with engine.connect() as conn:
        return {sid: (version, prac) for sid, version, prac in conn.execute(
            select(sessions.c.source_id, sessions.c.source_version, sessions.c.practitioner_id))}


def test_stream_of_batches_sums_counts_and_reports_commits(engine: Engine) -> None:
    committed: list[object] = []
    with BulkWriter(engine, "t1", batch_size=7, on_commit=committed.append) as writer:
        for n in range(50):
            writer.add(session(n), marker=n)
    assert writer.counts.inserted == 50
    assert committed == [6, 13, 20, 27, 34, 41, 48, 49]  # one marker per batch, in order
    with BulkWriter(engine, "t1", batch_size=7) as writer:
        for n in range(50):
            writer.add(session(n, version=2 if n % 2 else 1))
    assert (writer.counts.updated, writer.counts.unchanged) == (25, 25)


def test_roles_resolve_from_the_database_and_from_the_stream(engine: Engine) -> None:
    with BulkWriter(engine, "t1", batch_size=2) as writer:
        writer.add(MirrorRow("practitioner_roles", "PR-900", T0, "1", {"practitioner_id": "PR-1"}))
    with BulkWriter(engine, "t1", batch_size=2) as writer:  # PR-900 read from the database
        writer.add(session(1, practitioner_role_id="PR-900"))
        writer.add(session(2, practitioner_role_id="PR-901"))  # its role comes later in the stream
        writer.add(session(3))
        writer.add(MirrorRow("practitioner_roles", "PR-901", T0, "1", {"practitioner_id": "PR-2"}))
        writer.add(session(4, practitioner_role_id="PR-901"))
    got = stored(engine)
    assert (got["AP-1"][1], got["AP-2"][1], got["AP-3"][1], got["AP-4"][1]) == ("PR-1", "PR-2", None, "PR-2")


def test_abort_drops_the_unsent_batch_only(engine: Engine) -> None:
    writer = BulkWriter(engine, "t1", batch_size=10)
    for n in range(25):
        writer.add(session(n))
    counts = writer.abort()
    assert counts.inserted == 20 and len(stored(engine)) == 20


def test_a_database_error_surfaces_and_later_batches_are_not_written(engine: Engine) -> None:
    bad = MirrorRow("sessions", "AP-bad", T0, "1", {"no_such_column": 1})
    with pytest.raises(ValueError, match="unknown columns"), BulkWriter(engine, "t1", batch_size=5) as writer:
        for n in range(5):
            writer.add(session(n))
        writer.add(bad)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sessions)).scalar_one() == 5
