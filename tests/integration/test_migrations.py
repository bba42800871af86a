"""Migrations: the same alembic history builds the schema on SQLite, PostgreSQL and (offline) Azure SQL."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from shared.store.schema import metadata

ROOT = Path(__file__).resolve().parents[2]


def test_migrated_schema_matches_the_tables_in_code(engine: Engine) -> None:
    # Tables REST specs declare are migrate's own (shared/store/declared.py), not alembic's: left out.
    only_ours = {"include_name": lambda name, kind, _parent: kind != "table" or name in metadata.tables}
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts=only_ours), metadata)
    assert diff == [], f"schema.py and the migrations disagree: {diff}"


def test_dashboard_indexes_exist(engine: Engine) -> None:
    inspector = inspect(engine)
    sessions = {tuple(i["column_names"]) for i in inspector.get_indexes("sessions")}
    clients = {tuple(i["column_names"]) for i in inspector.get_indexes("clients")}
    assert ("practitioner_id", "tenant_id", "start_at") in sessions
    assert ("practitioner_id", "tenant_id") in clients
    for table in ("practitioners", "practitioner_roles", "clients", "sessions", "invoices"):
        # Only the primary key leads with tenant_id (see schema.py: the planner trap).
        assert all(i["column_names"][0] != "tenant_id" for i in inspector.get_indexes(table))
    runs = {i["name"]: i for i in inspector.get_indexes("sync_runs")}
    assert runs["uq_sync_runs_active"]["unique"]


def test_every_contract_table_and_bookkeeping_column(engine: Engine) -> None:
    inspector = inspect(engine)
    tables = set(inspector.get_table_names())
    assert {"practitioners", "clients", "sessions", "invoices", "sync_runs", "sync_cursors", "inbox",
            "leases", "tenants"} <= tables
    for name in ("practitioners", "practitioner_roles", "clients", "sessions", "invoices"):
        columns = {c["name"] for c in inspector.get_columns(name)}
        assert {"tenant_id", "source_id", "source_version", "source_updated_at", "content_hash",
                "deleted_at", "last_synced_at"} <= columns
        assert inspector.get_pk_constraint(name)["constrained_columns"] == ["tenant_id", "source_id"]


def test_offline_sql_for_azure_sql_needs_no_driver() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", "url=mssql+pyodbc://@server.database.windows.net/mirror",
         "upgrade", "head", "--sql"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    sql = out.stdout
    assert "CREATE TABLE sessions (" in sql and "source_updated_at DATETIME2(6) NOT NULL" in sql
    assert "given_name NVARCHAR(100) NULL" in sql
    assert "CONSTRAINT pk_sessions PRIMARY KEY (tenant_id, source_id)" in sql
    assert "CREATE UNIQUE INDEX uq_sync_runs_active ON sync_runs (tenant_id, kind) WHERE status IN ('queued', 'running')" in sql
    assert "GO" in sql and "fillfactor" not in sql


def test_downgrade_and_upgrade_again(database_url: str) -> None:
    from alembic import command

    from shared.store.migrate import alembic_config

    config = alembic_config(database_url)
    command.downgrade(config, "base")
    command.upgrade(config, "head")
