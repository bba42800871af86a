"""The one write path for mirrored rows: a batch in, counts out, guarded by version.

Per batch: one SELECT of the stored versions (chunked), a decision per row in Python (for the
counts, and so unchanged rows cost no write), then one bulk statement per dialect that re-checks
the guard atomically in SQL — so a concurrent writer can never make an older version win.
Rows are written in key order so two writers of overlapping batches cannot deadlock.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from sqlalchemy import BindParameter, Connection, Table, and_, bindparam, func, or_, select, update

from shared.records import MirrorRow
from shared.store.declared import find_table
from shared.store.guard import Outcome, StoredVersion, UpsertCounts, decide, version_key, version_seq
from shared.store.mssql import merge_rows
from shared.store.postgres import analyze_if_young, select_by_ids, upsert_rows_copy
from shared.store.schema import BOOKKEEPING, MIRRORED_TABLES
from shared.store.sqlite import upsert_rows_executemany

KEY_CHUNK = 1000  # keys per IN (...) — well under Azure SQL's 2,100 parameters
# How long after a change time a late event of that time may still arrive (_tie_possible).
TIE_SPAN = timedelta(days=1)
TOMBSTONE_UPDATE = ("source_version", "source_version_seq", "source_updated_at", "content_hash",
                    "deleted_at", "last_synced_at")


class TableLayout:
    """What upsert needs to know of one mirrored table, computed once."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.content_columns = tuple(c.name for c in table.columns if c.name not in BOOKKEEPING)
        self.allowed = frozenset(self.content_columns)
        self.max_lengths = tuple(
            (c.name, length) for c in table.columns
            if c.name in self.allowed and (length := getattr(c.type, "length", None))
        )
        self.live_update = tuple(c.name for c in table.columns if c.name not in ("tenant_id", "source_id"))
        self.empty_content = dict.fromkeys(self.content_columns)


_LAYOUTS = {name: TableLayout(table) for name, table in MIRRORED_TABLES.items()}


def layout(name: str) -> TableLayout:
    """A built-in table's layout, or a declared one's (shared/store/declared.py)."""
    found = _LAYOUTS.get(name)
    table = found.table if found is not None and name in MIRRORED_TABLES else find_table(name)
    if found is None or found.table is not table:  # new, or redeclared by a changed spec
        found = _LAYOUTS[name] = TableLayout(table)
    return found


def content_hash(layout: TableLayout, content: dict[str, Any]) -> str:
    # repr() of a tuple of plain values (str, datetime, Decimal, …) is deterministic and 2-3x
    # faster than JSON or pickle. Should a Python upgrade change it, each row is rewritten once
    # on its next sync (equal version, new hash), which is harmless.
    values = tuple(content.get(name) for name in layout.content_columns)
    return hashlib.blake2b(repr(values).encode(), digest_size=16).hexdigest()


@dataclass
class PreparedTable:
    """One table's share of a batch: the winning record per id, and the in-batch losers' counts."""

    layout: TableLayout
    records: dict[str, dict[str, Any]]
    counts: UpsertCounts
    observed: set[str] = field(default_factory=set)  # ids whose version is when they were seen
    seen_ties: set[str] = field(default_factory=set)  # ids whose version number is when they were seen


@dataclass
class PreparedBatch:
    """A batch ready to apply: pure data, built without a connection (see BulkWriter)."""

    tenant_id: str
    tables: list[PreparedTable]


def upsert_rows(
    conn: Connection, tenant_id: str, rows: Iterable[MirrorRow], *, now: datetime | None = None,
    changed: list[tuple[str, str, datetime]] | None = None,
) -> UpsertCounts:
    """Upsert rows of one tenant (any mix of tables) inside the caller's transaction.

    ``changed``, when given, receives (table, source id, source lastUpdated) of each row written."""
    return apply_prepared(conn, prepare_rows(tenant_id, rows, now=now), changed=changed)


def prepare_rows(tenant_id: str, rows: Iterable[MirrorRow], *, now: datetime | None = None) -> PreparedBatch:
    """Records with hashes and sync time, one per id (the newest), grouped by table. No I/O."""
    now = now or datetime.now(UTC)
    tables: dict[str, PreparedTable] = {}
    for row in rows:
        prepared = tables.get(row.table)
        if prepared is None:
            prepared = tables[row.table] = PreparedTable(layout(row.table), {}, UpsertCounts())
        record = _record(prepared.layout, tenant_id, row, now)
        previous = prepared.records.get(row.source_id)
        if row.observed:
            prepared.observed.add(row.source_id)
        if row.seen_version:
            prepared.seen_ties.add(row.source_id)
        if previous is None:
            prepared.records[row.source_id] = record
            continue
        # The same id twice in one batch: keep the winner, count the loser as the guard would.
        outcome = decide(_version(record), _version(previous))
        if outcome in (Outcome.UNCHANGED, Outcome.STALE):
            prepared.counts.add(outcome)
        else:
            prepared.counts.add(Outcome.STALE)
            prepared.records[row.source_id] = record
    return PreparedBatch(tenant_id, list(tables.values()))


def apply_prepared(conn: Connection, batch: PreparedBatch, *,
                   changed: list[tuple[str, str, datetime]] | None = None) -> UpsertCounts:
    """Read stored versions, decide per row, write what must be written. Caller's transaction."""
    counts = UpsertCounts()
    for prepared in batch.tables:
        counts += prepared.counts
        counts += _apply_table(conn, prepared.layout, batch.tenant_id, prepared.records, changed, prepared.observed,
                               prepared.seen_ties)
    return counts


def _apply_table(conn: Connection, layout: TableLayout, tenant_id: str, batch: dict[str, dict[str, Any]],
                 changed: list[tuple[str, str, datetime]] | None = None,
                 observed: set[str] | frozenset[str] = frozenset(),
                 seen_ties: set[str] | frozenset[str] = frozenset()) -> UpsertCounts:
    counts = UpsertCounts()
    stored = _stored_versions(conn, layout.table, tenant_id, list(batch))
    planned: dict[str, Outcome] = {}
    live: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    seen_again: list[dict[str, Any]] = []
    for source_id in sorted(batch):
        record = batch[source_id]
        old = stored.get(source_id)
        outcome = decide(_version(record), old, by_content=source_id in observed, seen_ties=source_id in seen_ties)
        if outcome in (Outcome.UNCHANGED, Outcome.STALE):
            counts.add(outcome)
            if (outcome is Outcome.UNCHANGED and old is not None and old.deleted_at is None
                    and record["content_hash"] == old.content_hash and _later(record, old)
                    and (source_id in observed or (source_id in seen_ties and _tie_possible(old)))):
                seen_again.append(record)
            continue
        planned[source_id] = outcome
        (dead if record["deleted_at"] is not None else live).append(record)

    written: dict[str, bool | None] = {}
    if live:
        written.update(_write(conn, layout.table, live, layout.live_update, tombstones=False))
    if dead:
        written.update(_write(conn, layout.table, dead, TOMBSTONE_UPDATE, tombstones=True))
    if dead or live:
        _after_write(conn, layout.table, sum(1 for v in written.values() if v))
    if seen_again:
        _seen_again(conn, layout.table, tenant_id, seen_again)
    for source_id, outcome in planned.items():
        if source_id not in written:
            # Not written: a concurrent writer stored an equal or newer version between our
            # read and our write, and the SQL guard kept it.
            outcome = Outcome.STALE
        elif outcome is Outcome.INSERTED and written[source_id] is False:
            outcome = Outcome.UPDATED  # another writer inserted it first; ours was newer
        if changed is not None and source_id in written:
            changed.append((layout.table.name, source_id, batch[source_id]["source_updated_at"]))
        counts.add(outcome)
    return counts


def _tie_possible(old: StoredVersion) -> bool:
    """Whether a late event of the stored row's change time could still be taken for newer: its
    version number (when it was seen) is before that time's end — a day, the coarsest change time
    a source states. Rows seen long after they changed (the steady state of a re-listing) are left
    alone, so a full listing of an unchanged table writes nothing."""
    return old.version_seq is None or old.version_seq / 1e6 < old.updated_at.timestamp() + TIE_SPAN.total_seconds()


def _later(record: dict[str, Any], old: StoredVersion) -> bool:
    return (version_key(record["source_updated_at"], record["source_version_seq"])
            > version_key(old.updated_at, old.version_seq))


def _seen_again(conn: Connection, table: Table, tenant_id: str, records: list[dict[str, Any]]) -> None:
    """Rows of a REST source seen again with the same content (``observed``: a source without a
    change time; ``seen_ties``: one whose change time is coarse, at an equal time): only their
    version (when they were seen) moves on, so that an event older than this sighting, applied
    after it, is stale — not taken for a newer change (a listing or event that finds the same
    content would otherwise leave the older version in place: a listing answered after two changes
    of one second, its version when it was asked for, let the first change's late event back).
    Content, hash and counts stay as they are; a row whose content changed meanwhile is left."""
    c = table.c
    at: BindParameter[datetime] = bindparam("b_at", type_=c.source_updated_at.type)
    seq: BindParameter[int] = bindparam("b_seq", type_=c.source_version_seq.type)
    conn.execute(
        update(table).where(c.tenant_id == tenant_id, c.source_id == bindparam("b_id"), c.deleted_at.is_(None),
                            c.content_hash == bindparam("b_hash"),
                            or_(c.source_updated_at < at,
                                and_(c.source_updated_at == at, func.coalesce(c.source_version_seq, -1) < seq)))
        .values(source_updated_at=at, source_version=bindparam("b_version"), source_version_seq=seq),
        [{"b_id": r["source_id"], "b_at": r["source_updated_at"], "b_version": r["source_version"],
          "b_seq": r["source_version_seq"], "b_hash": r["content_hash"]} for r in records])


def _record(layout: TableLayout, tenant_id: str, row: MirrorRow, now: datetime) -> dict[str, Any]:
    content = row.content
    unknown = content.keys() - layout.allowed
    if unknown:
        raise ValueError(f"{layout.table.name}: unknown columns {sorted(unknown)}")
    record = dict(layout.empty_content)
    record.update(content)
    for name, length in layout.max_lengths:
        value = record[name]
        if isinstance(value, str) and len(value) > length:
            record[name] = value[:length]
    record.update(
        tenant_id=tenant_id,
        source_id=row.source_id,
        source_version=row.source_version,
        source_version_seq=version_seq(row.source_version),
        source_updated_at=row.source_updated_at,
        content_hash=content_hash(layout, {} if row.is_tombstone else record),
        deleted_at=row.deleted_at,
        last_synced_at=now,
    )
    return record


def _version(record: dict[str, Any]) -> StoredVersion:
    return StoredVersion(record["source_updated_at"], record["source_version_seq"],
                         record["content_hash"], record["deleted_at"])


STORED_COLUMNS = ("source_id", "source_updated_at", "source_version_seq", "content_hash", "deleted_at")


def _stored_versions(conn: Connection, table: Table, tenant_id: str, ids: list[str]) -> dict[str, StoredVersion]:
    found: dict[str, StoredVersion] = {}
    for start in range(0, len(ids), KEY_CHUNK):
        chunk = ids[start:start + KEY_CHUNK]
        if conn.dialect.name == "postgresql":
            for source_id, updated_at, seq, digest, deleted_at in select_by_ids(
                    conn, table, tenant_id, chunk, STORED_COLUMNS):
                found[source_id] = StoredVersion(_aware(updated_at), seq, digest, _aware(deleted_at))
            continue
        c = table.c
        query = select(*(c[n] for n in STORED_COLUMNS)).where(c.tenant_id == tenant_id, c.source_id.in_(chunk))
        for source_id, *version in conn.execute(query):
            found[source_id] = StoredVersion(*version)
    return found


def _after_write(conn: Connection, table: Table, inserted: int) -> None:
    if conn.dialect.name == "postgresql":
        analyze_if_young(conn, table, inserted)


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: datetime | None) -> datetime | None: ...
def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _write(conn: Connection, table: Table, records: list[dict[str, Any]], update: Sequence[str],
           *, tombstones: bool) -> dict[str, bool | None]:
    """Write rows with the guard re-checked in SQL.

    Returns {id written: whether the INSERT branch ran, or None where that is the plan by
    construction}; ids missing from it lost to a concurrent newer write.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return upsert_rows_copy(conn, table, records, update, tombstones=tombstones)
    if dialect == "mssql":
        return merge_rows(conn, table, records, update, tombstones=tombstones)
    if dialect == "sqlite":
        return upsert_rows_executemany(conn, table, records, update, tombstones=tombstones)
    raise ValueError(f"upsert does not support the {dialect!r} dialect")
