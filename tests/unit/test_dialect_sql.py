"""The SQL each dialect runs, compiled without a server: Azure SQL MERGE, PostgreSQL unnest."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy.dialects import mssql

from shared.store.engine import SQL_COPT_SS_ACCESS_TOKEN, access_token_attrs
from shared.store.mssql import merge_statement, rows_json
from shared.store.postgres import copy_sql, create_stage_sql, upsert_sql
from shared.store.schema import MIRRORED_TABLES, sessions
from shared.store.upsert import TOMBSTONE_UPDATE, TableLayout


@pytest.mark.parametrize("name", sorted(MIRRORED_TABLES))
def test_mssql_merge_shape(name: str) -> None:
    table = MIRRORED_TABLES[name]
    sql = str(merge_statement(table, TableLayout(table).live_update, tombstones=False).compile(dialect=mssql.dialect()))
    assert sql.startswith(f"MERGE INTO [{name}] WITH (HOLDLOCK) AS t\n")
    assert "USING (SELECT * FROM OPENJSON(" in sql and ") AS s\n" in sql
    assert "ON t.[tenant_id] = s.[tenant_id] AND t.[source_id] = s.[source_id]" in sql
    matched = sql.split("WHEN MATCHED AND (", 1)[1].split(") THEN", 1)[0]
    assert "s.source_updated_at > t.source_updated_at" in matched
    assert "coalesce(s.source_version_seq, -1) > coalesce(t.source_version_seq, -1)" in matched
    assert "t.deleted_at IS NULL AND s.content_hash != t.content_hash" in matched
    assert "WHEN NOT MATCHED BY TARGET THEN\n    INSERT (" in sql
    assert sql.rstrip().endswith("OUTPUT $action, inserted.[source_id];")
    # Every column travels in the JSON with its Azure SQL type; times keep microseconds.
    for column in table.columns:
        assert f"[{column.name}] " in sql and f"'$.{column.name}'" in sql
    assert "[source_updated_at] DATETIME2(6)" in sql
    assert "t.[tenant_id] = s.[tenant_id]," not in sql  # keys are never updated


def test_mssql_tombstone_merge_updates_bookkeeping_only() -> None:
    sql = str(merge_statement(sessions, TOMBSTONE_UPDATE, tombstones=True).compile(dialect=mssql.dialect()))
    update = sql.split("UPDATE SET ", 1)[1].split("\n", 1)[0]
    assert "t.[deleted_at] = s.[deleted_at]" in update
    assert "t.[status]" not in update and "t.[start_at]" not in update
    assert "WHEN MATCHED AND (t.deleted_at IS NULL AND s.source_updated_at >= t.source_updated_at)" in sql


def test_mssql_rows_travel_as_json_with_naive_utc_times() -> None:
    payload = json.loads(rows_json([{
        "source_updated_at": datetime(2025, 1, 1, 10, 0, 0, 123456, tzinfo=UTC),
        "birth_date": date(1980, 5, 17), "total_net": Decimal("180.50"), "active": True, "x": None,
    }]))
    assert payload == [{"source_updated_at": "2025-01-01T10:00:00.123456", "birth_date": "1980-05-17",
                        "total_net": "180.50", "active": True, "x": None}]
    with pytest.raises(TypeError):
        rows_json([{"x": object()}])


def test_postgresql_upsert_is_copy_then_one_constant_statement() -> None:
    assert create_stage_sql(sessions).startswith(
        "CREATE TEMPORARY TABLE IF NOT EXISTS stage_sessions (tenant_id VARCHAR(64), source_id VARCHAR(64),")
    assert "start_at TIMESTAMPTZ" in create_stage_sql(sessions)
    assert create_stage_sql(sessions).endswith("ON COMMIT DELETE ROWS")
    assert copy_sql(sessions).startswith("COPY stage_sessions (tenant_id, source_id, source_version,")
    assert copy_sql(sessions).endswith("FROM STDIN (FORMAT BINARY)")
    sql = upsert_sql(sessions, TableLayout(sessions).live_update, False)
    assert sql.startswith("INSERT INTO sessions (tenant_id, source_id,")
    assert "FROM stage_sessions ORDER BY tenant_id, source_id\n" in sql
    assert "ON CONFLICT (tenant_id, source_id) DO UPDATE SET source_version = excluded.source_version" in sql
    assert "WHERE excluded.source_updated_at > sessions.source_updated_at" in sql
    assert sql.endswith("RETURNING source_id, (xmax = 0) AS inserted")


def test_access_token_is_packed_as_msodbcsql_expects() -> None:
    attrs = access_token_attrs("eyJ0b2tlbg")
    assert list(attrs) == [SQL_COPT_SS_ACCESS_TOKEN] == [1256]
    raw = attrs[1256]
    (length,) = struct.unpack_from("<I", raw)
    assert length == len("eyJ0b2tlbg") * 2 and raw[4:].decode("utf-16-le") == "eyJ0b2tlbg"


def test_pyodbc_is_imported_lazily() -> None:
    code = ("import sys, function_app, shared.store.upsert, shared.store.mssql, shared.store.engine, "
            "shared.importer.load, shared.cli; print('pyodbc' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
