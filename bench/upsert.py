"""Bulk upsert throughput versus a naive per-row select-then-insert/update, same process.

    python -m bench.upsert [--rows N] [--naive-rows N] [--batch N] [--postgres-url URL] [--only sqlite|postgresql]

Rows are appointments (the sessions table: the widest and most indexed). "bulk" is BulkWriter,
the path load and reconcile use; "upsert_rows" is one batch per call without the pipeline;
"naive" is one SELECT and one INSERT or UPDATE per row, committed per batch like the others
(the strong baseline) or per row ("naive/commit", as hand-rolled sync loops usually are).
An update changes the status and version, as a source's updates mostly do.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine, and_, insert, select, update

from bench.common import DEFAULT_POSTGRES_URL, postgres_engine, session_rows, sqlite_engine
from shared.records import MirrorRow
from shared.store.bulk import BulkWriter
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


def pipelined_pass(engine: Engine, rows: list[MirrorRow], batch: int) -> float:
    """The product's bulk path (load, reconcile): BulkWriter, preparing while writing."""
    started = time.perf_counter()
    with BulkWriter(engine, TENANT, batch_size=batch) as writer:
        for row in rows:
            writer.add(row)
    assert writer.counts.total == len(rows)
    return len(rows) / (time.perf_counter() - started)


def run_database(label: str, engine: Engine, args: argparse.Namespace) -> dict[str, float]:
    n, k, b = args.rows, args.naive_rows, args.batch
    # Each pass writes ids of its own (offsets), so every pass starts from the same table shape.
    figures = {
        "bulk insert": pipelined_pass(engine, session_rows(n, version=1), b),
        "bulk update": pipelined_pass(engine, session_rows(n, version=2), b),
        "bulk unchanged": pipelined_pass(engine, session_rows(n, version=2), b),
        "upsert_rows insert": timed_pass(engine, session_rows(n, version=1, offset=n), b, upsert_rows),
        "upsert_rows update": timed_pass(engine, session_rows(n, version=2, offset=n), b, upsert_rows),
        # The naive baseline on fresh ids (insert pass) and then on those ids again (update pass),
        # committed per batch like the bulk paths (the strong baseline) ...
        "naive insert": timed_pass(engine, session_rows(k, version=1, offset=2 * n), b, naive_upsert),
        "naive update": timed_pass(engine, session_rows(k, version=2, offset=2 * n), b, naive_upsert),
        # ... and committed per row, as a hand-rolled sync loop usually is.
        "naive/commit insert": timed_pass(engine, session_rows(k, version=1, offset=3 * n), 1, naive_upsert),
        "naive/commit update": timed_pass(engine, session_rows(k, version=2, offset=3 * n), 1, naive_upsert),
    }
    print(f"\n{label}: {n:,} rows per bulk pass, {k:,} rows per naive pass, batch {b}")
    for name, rate in figures.items():
        print(f"  {name:<19} {rate:>10,.0f} rows/s")
    for kind in ("insert", "update"):
        print(f"  ratio bulk/naive {kind}: {figures[f'bulk {kind}'] / figures[f'naive {kind}']:.1f}x "
              f"(committed per batch), {figures[f'bulk {kind}'] / figures[f'naive/commit {kind}']:.1f}x (per row)")
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
