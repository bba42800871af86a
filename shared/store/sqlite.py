"""SQLite: the bulk upsert as one constant INSERT … ON CONFLICT … DO UPDATE … WHERE <guard>
through the driver's executemany, SQLite's fastest path."""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Dialect, Table
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from shared.store.engine import driver
from shared.store.guard_sql import guard_condition


@lru_cache(maxsize=128)
def _bind_processors(table: Table, dialect: Dialect) -> tuple[tuple[str, Any], ...]:
    return tuple((c.name, c.type.bind_processor(dialect)) for c in table.columns)


def _driver_columns(table: Table, dialect: Dialect, records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Column-wise values with each column type's bind processing applied (UTCDateTime's
    aware -> naive UTC text, Boolean, Date, …): executemany bypasses SQLAlchemy's."""
    columns = {}
    for name, process in _bind_processors(table, dialect):
        values = [r[name] for r in records]
        columns[name] = [None if v is None else process(v) for v in values] if process else values
    return columns


@lru_cache(maxsize=64)
def _sqlite_upsert_sql(table: Table, update: tuple[str, ...], tombstones: bool, dialect: Dialect) -> str:
    stmt = sqlite_insert(table)
    excluded = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.tenant_id, table.c.source_id],
        set_={name: excluded[name] for name in update},
        where=guard_condition(table.c, excluded, tombstones=tombstones),
    )
    compiled = stmt.compile(dialect=dialect, column_keys=[c.name for c in table.columns])
    assert compiled.positiontup == [c.name for c in table.columns]
    return str(compiled)


def upsert_rows_executemany(conn: Connection, table: Table, records: list[dict[str, Any]], update: Sequence[str],
                   *, tombstones: bool) -> dict[str, bool | None]:
    # SQLite has one writer at a time and write_transaction takes the lock at BEGIN, so the
    # versions read above cannot change before this write: every planned row is written. The
    # guard stays in the statement as a safety net for callers that did not begin IMMEDIATE.
    # A constant statement through the driver's executemany is SQLite's fastest path.
    sql = _sqlite_upsert_sql(table, tuple(update), tombstones, conn.dialect)
    columns = _driver_columns(table, conn.dialect, records)
    cursor = driver(conn).cursor()
    try:
        cursor.executemany(sql, list(zip(*columns.values(), strict=True)))
    finally:
        cursor.close()
    # Exact under the write lock: the outcome planned from the versions read is what happened.
    return dict.fromkeys((r["source_id"] for r in records), None)
