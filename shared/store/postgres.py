"""PostgreSQL: the bulk upsert as COPY into a staging table, then one INSERT … SELECT … ON CONFLICT.

``COPY … FROM STDIN (FORMAT BINARY)`` is PostgreSQL's fastest way in, and psycopg formats its
rows in C: a multi-VALUES insert spent most of its time parsing 17,000 parameters, and
``unnest`` of typed arrays had psycopg build every array element in Python. The staging table
is a temporary table per connection (created once, emptied on commit), so the statements never
change. Both run on the psycopg connection beneath the caller's SQLAlchemy connection, inside
the same transaction.

Times are staged as ``timestamptz`` from the aware datetimes the transformers produce; the
INSERT converts them to the columns' naive UTC (the store's sessions run with TimeZone=UTC,
see engine.py).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql

from shared.store.engine import driver
from shared.store.guard_sql import guard_condition
from shared.store.schema import metadata
from shared.store.types import UTCDateTime

_DIALECT = postgresql.dialect()
_STAGED = "fhir_mirror_staged_tables"  # key in the DBAPI connection's info: tables staged


def _stage_type(column_type: Any) -> str:
    return "TIMESTAMPTZ" if isinstance(column_type, UTCDateTime) else column_type.compile(dialect=_DIALECT)


def _copy_type(column_type: Any) -> str:
    """psycopg's name of the binary type to send for a staging column."""
    name = _stage_type(column_type).split("(")[0].lower()
    return {"varchar": "varchar", "bigint": "int8", "integer": "int4", "boolean": "bool",
            "numeric": "numeric", "date": "date", "timestamptz": "timestamptz", "text": "text"}[name]


def stage_name(table: Table) -> str:
    """The staging table's name; a declared table's carries its columns' digest, so a definition
    changed by a new spec version gets a staging table of its own on a connection that has the old."""
    if table.metadata is metadata:
        return f"stage_{table.name}"
    digest = hashlib.blake2b(",".join(f"{c.name}:{c.type}" for c in table.columns).encode(), digest_size=4)
    return f"stage_{table.name[:40]}_{digest.hexdigest()}"


@lru_cache(maxsize=64)
def create_stage_sql(table: Table) -> str:
    columns = ", ".join(f"{c.name} {_stage_type(c.type)}" for c in table.columns)
    return f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage_name(table)} ({columns}) ON COMMIT DELETE ROWS"


@lru_cache(maxsize=64)
def copy_sql(table: Table) -> str:
    return f"COPY {stage_name(table)} ({', '.join(c.name for c in table.columns)}) FROM STDIN (FORMAT BINARY)"


@lru_cache(maxsize=64)
def upsert_sql(table: Table, update: tuple[str, ...], tombstones: bool) -> str:
    names = ", ".join(c.name for c in table.columns)
    guard = guard_condition(table.c, table.alias("excluded").c, tombstones=tombstones)
    guard_sql = guard.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True})
    return (
        # Key order: two writers of overlapping batches lock rows in the same order.
        f"INSERT INTO {table.name} ({names})\n"
        f"SELECT {names} FROM {stage_name(table)} ORDER BY tenant_id, source_id\n"
        "ON CONFLICT (tenant_id, source_id) DO UPDATE SET "
        + ", ".join(f"{n} = excluded.{n}" for n in update)
        + f"\nWHERE {guard_sql}\n"
        # xmax = 0 on a returned row means the INSERT branch ran (else the UPDATE branch).
        "RETURNING source_id, (xmax = 0) AS inserted"
    )


@lru_cache(maxsize=64)
def _copy_types(table: Table) -> tuple[str, ...]:
    return tuple(_copy_type(c.type) for c in table.columns)


def upsert_rows_copy(conn: Connection, table: Table, records: list[dict[str, Any]], update: Sequence[str],
                     *, tombstones: bool) -> dict[str, bool | None]:
    staged: set[str] = conn.connection.info.setdefault(_STAGED, set())
    names = [c.name for c in table.columns]
    with driver(conn).cursor() as cursor:
        if stage_name(table) not in staged:
            cursor.execute(create_stage_sql(table))
            staged.add(stage_name(table))
        with cursor.copy(copy_sql(table)) as copy:
            copy.set_types(list(_copy_types(table)))
            for record in records:
                copy.write_row([record[n] for n in names])
        cursor.execute(upsert_sql(table, tuple(update), tombstones))
        written = dict(cursor.fetchall())
        # Empty now, not only at commit: one transaction may upsert the same table again.
        cursor.execute(f"DELETE FROM {stage_name(table)}")
    return written


@lru_cache(maxsize=64)
def _lookup_sql(table: Table, columns: tuple[str, ...]) -> str:
    # LATERAL + LIMIT 1 on the full primary key is planned as one index probe per id even on a
    # table without statistics (a fresh tenant mid-load); "= ANY(array)" is then planned as a
    # scan of the tenant's rows per batch.
    return (
        f"SELECT {', '.join('t.' + c for c in columns)} FROM unnest(%(ids)b::varchar[]) AS k(id)\n"
        f"CROSS JOIN LATERAL (SELECT * FROM {table.name} s WHERE s.tenant_id = %(tenant)s"
        " AND s.source_id = k.id LIMIT 1) AS t"
    )


def select_by_ids(conn: Connection, table: Table, tenant_id: str, ids: list[str],
                  columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """Rows of ``columns`` for these ids of one tenant, raw driver values (naive UTC times)."""
    with driver(conn).cursor() as cursor:
        cursor.execute(_lookup_sql(table, columns), {"ids": ids, "tenant": tenant_id})
        return cursor.fetchall()


def analyze_if_young(conn: Connection, table: Table, inserted: int) -> bool:
    """ANALYZE a table that this batch grew by a large share (a new database, a first load).

    Until a table has statistics the planner may probe a secondary index that merely starts
    with tenant_id instead of the primary key — 600 ms instead of 2 ms per 1,000-key lookup at
    a few thousand rows. Autovacuum analyzes only after a minute or more; this runs at most a
    few times per table (while a batch adds at least a quarter of its rows) and costs
    milliseconds while the table is small.
    """
    if inserted < 100:
        return False
    with driver(conn).cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (table.name,))
        row = cursor.fetchone()
        if row is None or (row[0] >= 0 and row[0] >= 4 * inserted):
            return False
        cursor.execute(f"ANALYZE {table.name}")
    return True
