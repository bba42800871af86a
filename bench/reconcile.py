"""End-to-end full reconcile from the sandbox over HTTP into SQLite and PostgreSQL.

    python -m bench.reconcile [--resources N [N …]] [--page-size N] [--only sqlite|postgresql]

For each size and database: records/s of a full reconcile, the ratio to the raw bulk-upsert
rate of the same rows measured in the same run (BulkWriter, rows already mapped), the peak RSS
of the reconciling process, and the cost of an incremental run with nothing changed (requests
and row writes). With several sizes it ends with how peak RSS grew between the smallest and the
largest (goal: 1,000,000 within 100 MB of 100,000).

The sandbox runs in its own process, as a remote source would (in this process it would compete
with the client for the GIL), and each reconcile runs in a fresh child process, so its peak RSS
is its own: the baseline's rows are generated in the child only after the peak was read.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any

import httpx
from sqlalchemy import Engine

from bench.common import DEFAULT_POSTGRES_URL, cpu_seconds, postgres_cpu_seconds, postgres_engine, sqlite_engine
from devtools.sandbox.data import SandboxData
from devtools.synthetic import SyntheticCounts
from shared.fhir.transform import transform_resource
from shared.settings import TenantConfig
from shared.source.breaker import MemoryBreakerStore
from shared.source.budget import RateBudget
from shared.source.registry import SourceRegistry
from shared.store.bulk import BulkWriter
from shared.store.engine import write_transaction
from shared.store.runs import load_position, start_run
from shared.sync.reconcile import run_reconcile


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_snapshot(sandbox_pid: int | None) -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"client": usage.ru_utime + usage.ru_stime, "database": postgres_cpu_seconds(),
            "sandbox": cpu_seconds(sandbox_pid) if sandbox_pid else 0.0}


def counts_for(n: int) -> SyntheticCounts:
    practitioners = max(n // 2000, 1)
    # n resources in all: a fifth clients, three fifths appointments, a tenth each invoices and referrals.
    return SyntheticCounts(practitioners, n // 5, n * 3 // 5, n // 10 - 2 * practitioners, n // 10)


def sandbox_data(n: int, anchor: date) -> SandboxData:
    return SandboxData(counts_for(n), seed=3, anchor=datetime.combine(anchor, dtime(9), tzinfo=UTC))


class RemoteSandbox:
    """`python -m shared.cli sandbox` in a subprocess, serving ``n`` resources."""

    def __init__(self, n: int, anchor: date) -> None:
        counts = counts_for(n)
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

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def sandbox_requests(base_url: str) -> int:
    return httpx.get(base_url.rsplit("/", 1)[0] + "/_sandbox/faults").json()["requests"]


def reconcile_once(engine: Engine, base_url: str, kind: str, page_size: int) -> tuple[float, Any, int]:
    tenant = TenantConfig(id="bench", name="Bench", fhir_base_url=base_url, client_id="sandbox-client",
                          client_secret="sandbox-secret")
    with write_transaction(engine) as conn:
        lease = start_run(conn, tenant.id, kind)

    async def go() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            client = SourceRegistry(http, MemoryBreakerStore()).client(tenant)
            client.budget = RateBudget(limit=10**9)  # the sandbox runs without a rate limit here
            await run_reconcile(engine, client, tenant, lease, page_size=page_size)

    requests_before = sandbox_requests(base_url)
    started = time.perf_counter()
    asyncio.run(go())
    elapsed = time.perf_counter() - started
    with engine.connect() as conn:
        _position, counts = load_position(conn, lease)
    return elapsed, counts, sandbox_requests(base_url) - requests_before


def raw_upsert_rate(engine: Engine, data: SandboxData) -> float:
    """The same rows, already mapped, through the bulk writer into a second tenant."""
    rows = [transform_resource(s.resource) for kind in data.by_type.values() for s in kind.values()]
    started = time.perf_counter()
    with BulkWriter(engine, "raw", batch_size=1000) as writer:
        for row in rows:
            writer.add(row)
    return len(rows) / (time.perf_counter() - started)


@contextmanager
def database(name: str, url: str) -> Iterator[Engine]:
    with (sqlite_engine() if name == "sqlite" else postgres_engine(url, "fhir_mirror_bench_reconcile")) as engine:
        yield engine


def child(args: argparse.Namespace) -> None:
    """One database, one size, in this fresh process; prints one JSON line."""
    with database(args.child, args.postgres_url) as engine:
        before = cpu_snapshot(args.sandbox_pid)
        elapsed, run, requests = reconcile_once(engine, args.base_url, "full", args.page_size)
        after = cpu_snapshot(args.sandbox_pid)
        rss = peak_rss_mib()  # before anything else this process does allocates
        cpu = {k: after[k] - before[k] for k in after}
        idle_elapsed, idle, idle_requests = reconcile_once(engine, args.base_url, "incremental", args.page_size)
        data = sandbox_data(args.resources[0], date.fromisoformat(args.anchor))
        total = sum(len(v) for v in data.by_type.values())
        raw = raw_upsert_rate(engine, data)
    print(json.dumps({
        "total": total, "elapsed": elapsed, "inserted": run.inserted, "requests": requests,
        "rss": rss, "raw": raw, "cpu": cpu, "idle_requests": idle_requests, "idle_elapsed": idle_elapsed,
        "idle_writes": idle.inserted + idle.updated}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, nargs="+", default=[100_000])
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--child", choices=("sqlite", "postgresql"), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--anchor", help=argparse.SUPPRESS)
    parser.add_argument("--sandbox-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    anchor = (datetime.now(UTC) - timedelta(days=1)).date()
    names = [n for n in ("sqlite", "postgresql") if not args.only or args.only == n]
    peaks: dict[str, dict[int, float]] = {name: {} for name in names}
    for n in args.resources:
        print(f"starting the sandbox with {n:,} resources …", flush=True)
        box = RemoteSandbox(n, anchor)
        try:
            for name in names:
                out = subprocess.run(
                    [sys.executable, "-m", "bench.reconcile", "--child", name, "--base-url", box.base_url,
                     "--anchor", anchor.isoformat(), "--resources", str(n), "--page-size", str(args.page_size),
                     "--postgres-url", args.postgres_url, "--sandbox-pid", str(box.process.pid)],
                    check=True, stdout=subprocess.PIPE, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                rate = r["total"] / r["elapsed"]
                peaks[name][r["total"]] = r["rss"]
                print(f"{name:<10} full reconcile of {r['total']:,} resources: {r['elapsed']:.1f} s, "
                      f"{rate:,.0f} records/s ({r['inserted']:,} inserted), {r['requests']} requests, "
                      f"peak RSS {r['rss']:.0f} MiB")
                print(f"{name:<10} raw bulk upsert of the same rows: {r['raw']:,.0f} rows/s; "
                      f"reconcile / raw = {rate / r['raw']:.0%}")
                per = {k: v / r["total"] * 1e6 for k, v in r["cpu"].items()}
                ceiling = (os.cpu_count() or 1) * 1e6 / sum(per.values())
                print(f"{name:<10} CPU per record: client {per['client']:.0f} µs, sandbox {per['sandbox']:.0f} µs, "
                      f"database server {per['database']:.0f} µs → at most {ceiling:,.0f} records/s on "
                      f"{os.cpu_count()} cores")
                print(f"{name:<10} incremental with nothing changed: {r['idle_requests']} requests, "
                      f"{r['idle_writes']} row writes, {r['idle_elapsed']:.2f} s", flush=True)
        finally:
            box.stop()
    for name, by_size in peaks.items():
        if len(by_size) > 1:
            low, high = min(by_size), max(by_size)
            print(f"{name:<10} peak RSS {low:,} → {high:,} resources: {by_size[low]:.0f} → {by_size[high]:.0f} MiB "
                  f"({by_size[high] - by_size[low]:+.0f} MiB)")


if __name__ == "__main__":
    main()
