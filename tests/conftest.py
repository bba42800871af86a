"""Fixtures: real SQLite and PostgreSQL databases, Azurite, and a per-database summary.

PostgreSQL is required: when it cannot be reached the tests that need it fail (never skip).
"""
from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from shared.settings import load_settings
from shared.store.declared import declared_names
from shared.store.engine import create_store_engine
from shared.store.migrate import migrate
from shared.store.schema import metadata

POSTGRES_ADMIN_URL = os.environ.get("SYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped at the end."""
    name = f"fhir_mirror_test_{os.getpid()}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL is required at {POSTGRES_ADMIN_URL} ({exc.__class__.__name__}); "
                    "start it or set SYNC_TEST_POSTGRES_URL", pytrace=False)
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate(load_settings(database_url=url))
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    migrate(load_settings(database_url=url))
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on both real databases (PostgreSQL emptied before each test)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    url = request.getfixturevalue("postgresql_clean")
    return url


@pytest.fixture
def postgresql_clean(postgres_url: str) -> str:
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        # The built-in tables, and the tables REST specs declared in this session.
        existing = set(inspect(conn).get_table_names())
        names = ", ".join([t.name for t in metadata.sorted_tables]
                          + sorted(name for name in declared_names() if name in existing))
        conn.execute(text(f"TRUNCATE {names}"))
    engine.dispose()
    return postgres_url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = create_store_engine(load_settings(database_url=database_url))
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def azurite_queue_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's queue service on a free loopback port, in memory, no telemetry."""
    from devtools.localhost.azurite import AzuriteUnavailable, start_azurite_queue, stop

    try:
        proc, url = start_azurite_queue(tmp_path_factory.mktemp("azurite") / "azurite.log")
    except AzuriteUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield url
    stop(proc)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


_DATABASE_PASSES: Counter[str] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        # Test ids name their database: [sqlite] / [postgresql] params, or *_postgresql tests.
        name = report.nodeid.rsplit("::", 1)[-1]
        function, _, params = name.partition("[")
        for db in ("sqlite", "postgresql"):
            if db in params or function.endswith("_" + db):
                _DATABASE_PASSES[db] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _DATABASE_PASSES:
        terminalreporter.write_line(
            "database tests passed: " + ", ".join(f"{db} {n}" for db, n in sorted(_DATABASE_PASSES.items()))
        )
