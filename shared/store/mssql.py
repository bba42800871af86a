"""Azure SQL: the bulk upsert as one ``MERGE … WITH (HOLDLOCK)`` over an OPENJSON source.

SQLAlchemy has no MERGE construct, so the statement is built here from the table definition.
The whole batch travels as one NVARCHAR(MAX) JSON parameter: Azure SQL allows 2,100 parameters
per statement, which would otherwise cap a batch at ~100 rows. HOLDLOCK (serializable range
locks on the key) keeps two concurrent MERGEs of a new key from both taking the INSERT branch.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table, text
from sqlalchemy.dialects import mssql
from sqlalchemy.sql.elements import TextClause

from shared.store.guard_sql import guard_condition

_DIALECT = mssql.dialect()


def _column_type(table: Table, name: str) -> str:
    return table.c[name].type.compile(dialect=_DIALECT)


def _guard_sql(table: Table, tombstones: bool) -> str:
    # The same SQLAlchemy expression the other dialects use, rendered for T-SQL.
    condition = guard_condition(table.alias("t").c, table.alias("s").c, tombstones=tombstones)
    return str(condition.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))


@lru_cache(maxsize=64)
def _merge_sql(table: Table, update: tuple[str, ...], tombstones: bool) -> str:
    names = [c.name for c in table.columns]
    with_clause = ",\n        ".join(f"[{n}] {_column_type(table, n)} '$.{n}'" for n in names)
    set_clause = ", ".join(f"t.[{n}] = s.[{n}]" for n in update)
    insert_cols = ", ".join(f"[{n}]" for n in names)
    insert_vals = ", ".join(f"s.[{n}]" for n in names)
    return (
        f"MERGE INTO [{table.name}] WITH (HOLDLOCK) AS t\n"
        f"USING (SELECT * FROM OPENJSON(:rows) WITH (\n        {with_clause}\n    )) AS s\n"
        "ON t.[tenant_id] = s.[tenant_id] AND t.[source_id] = s.[source_id]\n"
        f"WHEN MATCHED AND ({_guard_sql(table, tombstones)}) THEN\n    UPDATE SET {set_clause}\n"
        f"WHEN NOT MATCHED BY TARGET THEN\n    INSERT ({insert_cols}) VALUES ({insert_vals})\n"
        "OUTPUT $action, inserted.[source_id];"
    )


def merge_statement(table: Table, update: Sequence[str], *, tombstones: bool) -> TextClause:
    return text(_merge_sql(table, tuple(update), tombstones))


def rows_json(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, default=_json_value, separators=(",", ":"))


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        # Naive UTC ISO 8601: what DATETIME2 parses in OPENJSON ... WITH.
        return value.astimezone(UTC).replace(tzinfo=None).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} to Azure SQL")


def merge_rows(conn: Connection, table: Table, records: list[dict[str, Any]], update: Sequence[str],
               *, tombstones: bool) -> dict[str, bool | None]:
    result = conn.execute(merge_statement(table, update, tombstones=tombstones), {"rows": rows_json(records)})
    return {source_id: action == "INSERT" for action, source_id in result}
