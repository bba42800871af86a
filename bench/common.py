"""Shared benchmark plumbing: throw-away databases, synthetic session rows, waiting for a server."""
from __future__ import annotations

import os
import random
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from shared.records import MirrorRow
from shared.settings import load_settings
from shared.store.engine import create_store_engine
from shared.store.migrate import migrate

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


@contextmanager
def migrated_engine(url: str) -> Iterator[Engine]:
    settings = load_settings(database_url=url)
    migrate(settings)
    engine = create_store_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def sqlite_engine() -> Iterator[Engine]:
    with tempfile.TemporaryDirectory() as tmp, migrated_engine(f"sqlite:///{Path(tmp) / 'bench.db'}") as engine:
        yield engine


@contextmanager
def postgres_database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh, empty database ``name`` on the server of ``admin_url`` (its URL), dropped afterwards."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def postgres_engine(admin_url: str, name: str) -> Iterator[Engine]:
    """A fresh, migrated database ``name`` on the server of ``admin_url``, dropped afterwards."""
    with postgres_database(admin_url, name) as url, migrated_engine(url) as engine:
        yield engine


STATUSES = ("booked", "attended", "cancelled", "no_show")


def session_rows(count: int, *, version: int, seed: int = 7, offset: int = 0) -> list[MirrorRow]:
    """Realistic appointment rows: ids like Halaxy's, a practitioner, a client, a time.

    Who and when stay fixed per id; a new ``version`` changes the status, as a source's
    updates mostly do (booked -> attended or cancelled), with a newer lastUpdated.
    """
    rng = random.Random(seed)
    updated = EPOCH + timedelta(days=version)
    status = STATUSES[version % len(STATUSES)]
    rows = []
    for i in range(offset, offset + count):
        start = EPOCH + timedelta(minutes=30 * rng.randrange(0, 200_000))
        rows.append(MirrorRow(
            table="sessions", source_id=f"AP-{1_000_000 + i}", source_updated_at=updated,
            source_version=str(version),
            content={
                "practitioner_id": f"PR-{rng.randrange(1000)}", "practitioner_role_id": None,
                "client_id": f"PT-{rng.randrange(100_000)}", "client_ids": None,
                "start_at": start, "end_at": start + timedelta(minutes=50),
                "status": status, "source_status": status, "service": "Psychology consult",
            },
        ))
    return rows


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU of every PostgreSQL server process on this machine (the database's share of the work)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(entry))
            except OSError:
                continue  # ended meanwhile
    return total


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (share 0.99 → p99)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def wait_for(url: str, *, process: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    """Until ``url`` answers below 500; fails early when ``process`` (the server) exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")
