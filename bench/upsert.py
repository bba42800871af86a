"""Bulk upsert throughput versus a naive per-row select-then-insert/update, same process.

    python -m bench.upsert [--rows N] [--naive-rows N] [--batch N] [--postgres-url URL] [--only sqlite|postgresql]
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine, and_, insert, select, update

from bench.common import DEFAULT_POSTGRES_URL, postgres_engine, session_rows, sqlite_engine
from shared.records import MirrorRow
from shared.store.engine import write_transaction
from shared.store.guard import version_seq
from shared.store.schema import sessions
from shared.store.upsert import _LAYOUTS, content_hash, upsert_rows

TENANT = "bench"


def naive_upsert(conn: Connection, tenant_id: str, rows: Sequence[MirrorRow]) -> None:
    """The baseline: what a hand-written sync does — one SELECT, then one INSERT or UPDATE, per row."""
    layout = _LAYOUTS["sessions"]
    c = sessions.c
    for row in rows:
        values = dict(row.content, source_version=row.source_version,
                      source_version_seq=version_seq(row.source_version),
                      source_updated_at=row.source_updated_at,
                      content_hash=content_hash(layout, row.content), last_synced_at=row.source_updated_at)
        key = and_(c.tenant_id == tenant_id, c.source_id == row.source_id)
        stored = conn.execute(select(c.source_updated_at, c.content_hash).where(key)).first()
        if stored is None:
            conn.execute(insert(sessions).values(tenant_id=tenant_id, source_id=row.source_id, **values))
        elif row.source_updated_at > stored.source_updated_at:
            conn.execute(update(sessions).where(key).values(**values))


def timed_pass(engine: Engine, rows: list[MirrorRow], batch: int,
               write: Callable[[Connection, str, Sequence[MirrorRow]], object]) -> float:
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        with write_transaction(engine) as conn:
            write(conn, TENANT, rows[start:start + batch])
    return len(rows) / (time.perf_counter() - started)


def run_database(label: str, engine: Engine, args: argparse.Namespace) -> dict[str, float]:
    n, k = args.rows, args.naive_rows
    figures = {
        "bulk insert": timed_pass(engine, session_rows(n, version=1), args.batch, upsert_rows),
        "bulk update": timed_pass(engine, session_rows(n, version=2), args.batch, upsert_rows),
        "bulk unchanged": timed_pass(engine, session_rows(n, version=2), args.batch, upsert_rows),
        # The naive baseline on fresh ids (insert pass) and then on those ids again (update pass).
        "naive insert": timed_pass(engine, session_rows(k, version=1, offset=n), args.batch, naive_upsert),
        "naive update": timed_pass(engine, session_rows(k, version=2, offset=n), args.batch, naive_upsert),
    }
    print(f"\n{label}: {n:,} rows bulk, {k:,} rows naive, batch {args.batch}")
    for name, rate in figures.items():
        print(f"  {name:<15} {rate:>10,.0f} rows/s")
    for kind in ("insert", "update"):
        print(f"  ratio bulk/naive {kind}: {figures[f'bulk {kind}'] / figures[f'naive {kind}']:.1f}x")
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--naive-rows", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help="a server where a throw-away database may be created")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args(argv)
    if args.only != "postgresql":
        with sqlite_engine() as engine:
            run_database("SQLite (file, WAL)", engine, args)
    if args.only != "sqlite":
        with postgres_engine(args.postgres_url, "fhir_mirror_bench") as engine:
            run_database("PostgreSQL", engine, args)


if __name__ == "__main__":
    main()
