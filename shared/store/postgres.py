"""PostgreSQL: the bulk upsert as one constant INSERT … SELECT FROM unnest(arrays) ON CONFLICT.

One typed array per column instead of one parameter per value: the statement text never
changes and a 1,000-row batch is 17 parameters, not 17,000 (psycopg's parsing of those
dominated a multi-VALUES insert). The arrays go in binary format (``%(name)b``), which
SQLAlchemy's text() cannot ask for, so the statement runs on the psycopg connection beneath
the caller's SQLAlchemy connection — inside the same transaction.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql

_DIALECT = postgresql.dialect()


@lru_cache(maxsize=64)
def upsert_sql(table: Table, update: tuple[str, ...], tombstones: bool) -> str:
    from shared.store.upsert import guard_condition

    names = [c.name for c in table.columns]
    arrays = ", ".join(f"CAST(%({n})b AS {table.c[n].type.compile(dialect=_DIALECT)}[])" for n in names)
    guard = guard_condition(table.c, table.alias("excluded").c, tombstones=tombstones)
    guard_sql = guard.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True})
    return (
        f"INSERT INTO {table.name} ({', '.join(names)})\n"
        f"SELECT * FROM unnest({arrays})\n"
        "ON CONFLICT (tenant_id, source_id) DO UPDATE SET "
        + ", ".join(f"{n} = excluded.{n}" for n in update)
        # xmax = 0 on a returned row means the INSERT branch ran (else the UPDATE branch).
        + f"\nWHERE {guard_sql}\nRETURNING source_id, (xmax = 0) AS inserted"
    )


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
    with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(_lookup_sql(table, columns), {"ids": ids, "tenant": tenant_id})
        return cursor.fetchall()


def upsert_rows_unnest(conn: Connection, table: Table, records: list[dict[str, Any]], update: Sequence[str],
                       *, tombstones: bool) -> dict[str, bool]:
    from shared.store.upsert import processed_columns

    params = processed_columns(table, conn.dialect, records)
    with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(upsert_sql(table, tuple(update), tombstones), params)
        return {source_id: inserted for source_id, inserted in cursor.fetchall()}
