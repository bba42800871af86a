"""End-to-end full reconcile from the sandbox over HTTP into SQLite and PostgreSQL.

    python -m bench.reconcile [--resources N] [--page-size N] [--only sqlite|postgresql]

Prints records/s, the ratio to the raw bulk-upsert rate of the same rows measured in the same
run (BulkWriter, rows already mapped), peak RSS, and the cost of an incremental run with nothing
changed (requests and row writes). The sandbox runs in its own process, as a remote source
would (in this process it would compete with the client for the GIL).
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime

import httpx
from sqlalchemy import Engine

from bench.common import DEFAULT_POSTGRES_URL, postgres_engine, sqlite_engine
from shared.fhir.synthetic import SyntheticCounts
from shared.fhir.transform import transform_resource
from shared.sandbox.data import SandboxData
from shared.settings import TenantConfig
from shared.source.breaker import MemoryBreakerStore
from shared.source.budget import RateBudget
from shared.source.registry import SourceRegistry
from shared.store.bulk import BulkWriter
from shared.store.engine import write_transaction
from shared.sync.reconcile import run_reconcile
from shared.sync.runs import load_position, start_run


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RemoteSandbox:
    """`python -m shared.cli sandbox` in a subprocess; the same data regenerated here for the baseline."""

    def __init__(self, counts: SyntheticCounts, anchor: date) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/main"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "sandbox", "--port", str(self.port), "--seed", "3",
             "--anchor", anchor.isoformat(), "--rate-limit", "0", "--practitioners", str(counts.practitioners),
             "--patients", str(counts.patients), "--appointments", str(counts.appointments),
             "--invoices", str(counts.invoices)], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "sandbox: … generated …": it is listening
        self.data = SandboxData(counts, seed=3, anchor=datetime.combine(anchor, dtime(9), tzinfo=timezone.utc))

    @property
    def requests(self) -> int:
        return httpx.get(f"http://127.0.0.1:{self.port}/_sandbox/faults").json()["requests"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def reconcile_once(engine: Engine, box: RemoteSandbox, kind: str, page_size: int) -> tuple[float, object, int]:
    tenant = TenantConfig(id="bench", name="Bench", fhir_base_url=box.base_url, client_id="sandbox-client",
                          client_secret="sandbox-secret")
    with write_transaction(engine) as conn:
        lease = start_run(conn, tenant.id, kind)

    async def go() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            client = SourceRegistry(http, MemoryBreakerStore()).client(tenant)
            client.budget = RateBudget(limit=10**9)  # the sandbox runs without a rate limit here
            await run_reconcile(engine, client, tenant, lease, page_size=page_size)

    requests_before = box.requests
    started = time.perf_counter()
    asyncio.run(go())
    elapsed = time.perf_counter() - started
    with engine.connect() as conn:
        _position, counts = load_position(conn, lease)
    return elapsed, counts, box.requests - requests_before


def raw_upsert_rate(engine: Engine, box: RemoteSandbox) -> float:
    """The same rows, already mapped, through the bulk writer into a second tenant."""
    rows = [transform_resource(s.resource) for kind in box.data.by_type.values() for s in kind.values()]
    started = time.perf_counter()
    with BulkWriter(engine, "raw", batch_size=1000) as writer:
        for row in rows:
            writer.add(row)
    return len(rows) / (time.perf_counter() - started)


@contextmanager
def database(name: str, url: str) -> Iterator[Engine]:
    with (sqlite_engine() if name == "sqlite" else postgres_engine(url, "fhir_mirror_bench_reconcile")) as engine:
        yield engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    n = args.resources
    counts = SyntheticCounts(max(n // 2000, 1), n // 5, n * 3 // 5, n // 5 - 2 * max(n // 2000, 1))
    box = RemoteSandbox(counts, (datetime.now(timezone.utc) - timedelta(days=1)).date())
    total = sum(len(v) for v in box.data.by_type.values())
    try:
        for name in ("sqlite", "postgresql"):
            if args.only and args.only != name:
                continue
            with database(name, args.postgres_url) as engine:
                elapsed, run, requests = reconcile_once(engine, box, "full", args.page_size)
                rate = total / elapsed
                raw = raw_upsert_rate(engine, box)
                idle_elapsed, idle, idle_requests = reconcile_once(engine, box, "incremental", args.page_size)
                print(f"{name:<10} full reconcile of {total:,} resources: {elapsed:.1f} s, {rate:,.0f} records/s "
                      f"({run.inserted:,} inserted), {requests} requests")
                print(f"{name:<10} raw bulk upsert of the same rows: {raw:,.0f} rows/s; reconcile / raw = {rate / raw:.0%}")
                print(f"{name:<10} incremental with nothing changed: {idle_requests} requests, "
                      f"{idle.inserted + idle.updated} row writes, {idle_elapsed:.2f} s")  # type: ignore[attr-defined]
                print(f"{name:<10} peak RSS so far: {peak_rss_mib():.0f} MiB")
    finally:
        box.stop()


if __name__ == "__main__":
    main()
