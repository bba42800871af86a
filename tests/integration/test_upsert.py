"""The bulk upsert on real SQLite and PostgreSQL: counts, the guard, no rewrites, tombstones."""
from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, text

from shared.records import MirrorRow
from shared.store.engine import write_transaction
from shared.store.guard import Outcome, StoredVersion, decide, version_seq
from shared.store.mirror import write_rows
from shared.store.schema import clients, invoices, sessions
from shared.store.upsert import upsert_rows

T0 = datetime(2025, 1, 1, tzinfo=UTC)
TENANT = "t1"


def row(sid: str, minutes: int = 0, version: str | None = "1", status: str = "booked", **content: object) -> MirrorRow:
    return MirrorRow("sessions", sid, T0 + timedelta(minutes=minutes), version,
                     {"status": status, "start_at": T0 + timedelta(days=1), **content})


def write(engine: Engine, rows: list[MirrorRow], tenant: str = TENANT) -> dict[str, int]:
    with write_transaction(engine) as conn:
        return upsert_rows(conn, tenant, rows).as_dict()


def stored(engine: Engine, tenant: str = TENANT) -> dict[str, tuple[object, ...]]:
    c = sessions.c
    with engine.connect() as conn:
        result = conn.execute(select(c.source_id, c.status, c.source_version, c.source_updated_at, c.deleted_at,
                                     c.last_synced_at).where(c.tenant_id == tenant))
        return {r.source_id: tuple(r)[1:] for r in result}


def test_counts_for_every_outcome(engine: Engine) -> None:
    assert write(engine, [row("A"), row("B"), row("C")])["inserted"] == 3
    assert write(engine, [row("A"), row("B"), row("C")])["unchanged"] == 3
    counts = write(engine, [row("A", 5, "2", "attended"), row("B", -5, "0"), row("C")])
    assert (counts["updated"], counts["stale"], counts["unchanged"]) == (1, 1, 1)
    counts = write(engine, [MirrorRow.tombstone("sessions", "B", T0 + timedelta(minutes=10)),
                            MirrorRow.tombstone("sessions", "Z", T0)])
    assert counts["deleted"] == 2
    assert write(engine, [row("B", 20, "9", "booked")])["resurrected"] == 1
    state = stored(engine)
    assert state["A"][:2] == ("attended", "2") and state["B"][0] == "booked" and state["B"][3] is None
    assert state["Z"][3] is not None and state["Z"][0] is None  # a tombstone for a never-seen id


def test_newer_wins_older_is_ignored_in_any_order(engine: Engine) -> None:
    write(engine, [row("A", 10, "3", "attended")])
    assert write(engine, [row("A", 5, "2", "cancelled")])["stale"] == 1
    assert stored(engine)["A"][0] == "attended"


def test_equal_time_breaks_ties_on_version_then_content(engine: Engine) -> None:
    write(engine, [row("A", 0, "2", "booked")])
    assert write(engine, [row("A", 0, "1", "cancelled")])["stale"] == 1
    assert write(engine, [row("A", 0, "3", "arrived")])["updated"] == 1
    # Same time and version, different mapped content (a transformer fix): applied.
    assert write(engine, [row("A", 0, "3", "attended")])["updated"] == 1
    assert stored(engine)["A"][0] == "attended"


def test_unchanged_rows_are_not_rewritten(engine: Engine) -> None:
    write(engine, [row("A"), row("B")])
    before = stored(engine)
    with write_transaction(engine) as conn:
        counts = upsert_rows(conn, TENANT, [row("A"), row("B")], now=T0 + timedelta(days=30))
    assert counts.unchanged == 2
    assert stored(engine) == before  # last_synced_at untouched: no write happened


def test_duplicates_inside_one_batch_keep_the_newest(engine: Engine) -> None:
    counts = write(engine, [row("A", 1, "1", "booked"), row("A", 3, "3", "attended"), row("A", 2, "2", "cancelled"),
                            row("A", 3, "3", "attended")])
    assert counts == {"inserted": 1, "updated": 0, "unchanged": 1, "stale": 2, "deleted": 0, "resurrected": 0}
    assert stored(engine)["A"][:2] == ("attended", "3")


def test_tombstones_keep_content_and_ignore_older_updates(engine: Engine) -> None:
    write(engine, [row("A", 0, "1", "booked")])
    write(engine, [MirrorRow.tombstone("sessions", "A", T0 + timedelta(minutes=5))])
    assert write(engine, [row("A", 3, "2", "attended")])["stale"] == 1
    assert write(engine, [MirrorRow.tombstone("sessions", "A", T0 + timedelta(minutes=9))])["unchanged"] == 1
    status, _version, _updated, deleted_at, _synced = stored(engine)["A"]
    assert status == "booked" and deleted_at == T0 + timedelta(minutes=5)


def test_tenants_are_isolated(engine: Engine) -> None:
    write(engine, [row("A", 0, "1", "booked")], tenant="t1")
    write(engine, [row("A", 0, "1", "attended")], tenant="t2")
    assert write(engine, [row("A", 0, "1", "booked")], tenant="t1")["unchanged"] == 1
    assert stored(engine, "t1")["A"][0] == "booked" and stored(engine, "t2")["A"][0] == "attended"


def test_long_text_is_truncated_to_the_column_not_failed(engine: Engine) -> None:
    write(engine, [row("A", service="x" * 500)])
    with engine.connect() as conn:
        assert conn.execute(select(sessions.c.service)).scalar_one() == "x" * 200


def test_batches_larger_than_a_key_chunk(engine: Engine) -> None:
    rows = [row(f"S-{i}") for i in range(2500)]
    assert write(engine, rows)["inserted"] == 2500
    assert write(engine, rows)["unchanged"] == 2500


def test_every_mirrored_table_round_trips_its_types(engine: Engine) -> None:
    from datetime import date
    from decimal import Decimal

    with write_transaction(engine) as conn:
        upsert_rows(conn, TENANT, [
            MirrorRow("clients", "PT-1", T0, "1", {"initials": "AB", "birth_date": date(1980, 5, 17), "active": True}),
            MirrorRow("invoices", "IN-1", T0, "1", {"total_gross": Decimal("198.50"), "currency": "AUD",
                                                    "issued_at": T0 + timedelta(hours=3)}),
        ])
    with engine.connect() as conn:
        c = conn.execute(select(clients.c.birth_date, clients.c.active)).one()
        i = conn.execute(select(invoices.c.total_gross, invoices.c.issued_at)).one()
    assert c == (date(1980, 5, 17), True)
    assert Decimal(str(i.total_gross)) == Decimal("198.50") and i.issued_at == T0 + timedelta(hours=3)


def test_database_agrees_with_the_pure_guard_over_random_histories(engine: Engine) -> None:
    """A model check: random batches of versions, deletions and duplicates; after each batch the
    database holds exactly what guard.decide says, and the counts match the model's."""
    rng = random.Random(5)
    model: dict[str, StoredVersion] = {}
    statuses = ("booked", "attended", "cancelled")
    for _ in range(25):
        batch, expected = [], {o.value: 0 for o in Outcome}
        keys = [f"K{rng.randrange(12)}" for _ in range(rng.randrange(1, 15))]
        for key in dict.fromkeys(keys):  # the model handles one row per key per batch
            minutes, version = rng.randrange(6), str(rng.randrange(1, 4))
            if rng.random() < 0.15:
                r = MirrorRow.tombstone("sessions", key, T0 + timedelta(minutes=minutes))
                incoming = StoredVersion(r.source_updated_at, None, "", r.deleted_at)
            else:
                r = row(key, minutes, version, rng.choice(statuses))
                incoming = StoredVersion(r.source_updated_at, version_seq(version), r.content["status"], None)
            batch.append(r)
            outcome = decide(incoming, model.get(key))
            expected[outcome.value] += 1
            if outcome not in (Outcome.UNCHANGED, Outcome.STALE):
                model[key] = incoming
        assert write(engine, batch) == expected
        state = stored(engine)
        for key, want in model.items():
            stored_status, _v, updated_at, deleted_at, _s = state[key]
            assert updated_at == want.updated_at and (deleted_at is not None) == (want.deleted_at is not None)
            if want.deleted_at is None:
                assert stored_status == want.content_hash


def test_role_resolution_fills_practitioner_before_and_after_roles_arrive(engine: Engine) -> None:
    role = MirrorRow("practitioner_roles", "RO-1", T0, "1", {"practitioner_id": "PR-1"})
    early = row("AP-early", practitioner_role_id="RO-2")
    with write_transaction(engine) as conn:
        write_rows(conn, TENANT, [early, role, row("AP-same-batch", practitioner_role_id="RO-1")])
    with write_transaction(engine) as conn:
        write_rows(conn, TENANT, [row("AP-later", practitioner_role_id="RO-1"),
                                  row("AP-direct", practitioner_id="PR-7", practitioner_role_id="RO-1")])
    with write_transaction(engine) as conn:  # RO-2 arrives after the appointment naming it
        write_rows(conn, TENANT, [MirrorRow("practitioner_roles", "RO-2", T0, "1", {"practitioner_id": "PR-2"})])
    with engine.connect() as conn:
        got = dict(conn.execute(select(sessions.c.source_id, sessions.c.practitioner_id)).all())
    assert got == {"AP-early": "PR-2", "AP-same-batch": "PR-1", "AP-later": "PR-1", "AP-direct": "PR-7"}


def test_postgresql_rows_are_not_touched_when_unchanged(postgresql_clean: str) -> None:
    """On PostgreSQL, an unchanged row keeps its physical version (xmin): nothing was written."""
    from shared.settings import load_settings
    from shared.store.engine import create_store_engine

    engine = create_store_engine(load_settings(database_url=postgresql_clean))
    try:
        write(engine, [row("A"), row("B")])
        query = text("SELECT source_id, xmin::text FROM sessions ORDER BY source_id")
        with engine.connect() as conn:
            before = conn.execute(query).all()
        write(engine, [row("A"), row("B")])
        with engine.connect() as conn:
            assert conn.execute(query).all() == before
    finally:
        engine.dispose()

