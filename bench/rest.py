"""A REST source's full sync against the FHIR reconcile, same size, same run.

    python -m bench.rest [--records N] [--api pems …] [--only sqlite|postgresql] [--rounds R]

Both sandboxes run in their own processes (`python -m shared.cli sandbox`, as a remote source
would); each sync runs in a fresh child process, as the CLI's `reconcile --kind full` does it: an
unlimited rate budget and the largest page the source allows (FHIR `_count=1000`; a REST spec's
`page_size.max`, PEMS 10,000). For each database and round: records/s of the FHIR full reconcile
of N resources and of each REST API's full sync of N records, their ratio, and CPU per record
(this process, the sandbox, PostgreSQL's server). Rounds alternate the order (FHIR first, then
REST first) so that neither always meets a warmer machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import DEFAULT_POSTGRES_URL, cpu_seconds, postgres_cpu_seconds
from bench.reconcile import RemoteSandbox, database
from shared.settings import TenantConfig, parse_tenants
from shared.source.breaker import MemoryBreakerStore
from shared.source.budget import RateBudget
from shared.source.registry import SourceRegistry
from shared.store.declared import declare, ensure_tables
from shared.store.engine import write_transaction
from shared.store.runs import load_position, start_run
from shared.sync.reconcile import run_reconcile

ROOT = Path(__file__).resolve().parents[1]
UNLIMITED = 10**9


class RestSandboxProcess:
    """`python -m shared.cli sandbox --api NAME --records N --rate-limit 0` in a subprocess."""

    def __init__(self, api: str, records: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "sandbox", "--api", api, "--records", str(records), "--port",
             str(self.port), "--seed", "3", "--rate-limit", "0"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "sandbox NAME: … generated …": it is listening

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def rest_tenant(api: str, base_url: str) -> TenantConfig:
    """samples/tenants.API.json, pointed at the sandbox."""
    raw = json.loads((ROOT / "samples" / f"tenants.{api}.json").read_text())["tenants"][0]
    raw = {key: (value.replace("http://127.0.0.1:7072", base_url) if isinstance(value, str) else value)
           for key, value in raw.items()}
    return parse_tenants(json.dumps([raw]), source=f"samples/tenants.{api}.json")[0]


def fhir_tenant(base_url: str) -> TenantConfig:
    return TenantConfig(id="bench", name="Bench", fhir_base_url=base_url, client_id="sandbox-client",
                        client_secret="sandbox-secret")


def requests_served(admin_url: str) -> int:
    return int(httpx.get(f"{admin_url}/_sandbox/faults").json()["requests"])


def child(args: argparse.Namespace) -> None:
    """One full sync into a fresh database, in this fresh process; prints one JSON line."""
    tenant = fhir_tenant(args.base_url) if args.source == "fhir" else rest_tenant(args.source, args.base_url)
    page_size = 1000 if tenant.is_fhir else tenant.rest_spec().page_size.max
    admin_url = args.base_url.rsplit("/", 1)[0] if tenant.is_fhir else args.base_url
    with database(args.child, args.postgres_url) as engine:
        if not tenant.is_fhir:
            ensure_tables(engine, declare([tenant.rest_spec()]), lambda line: None)
        with write_transaction(engine) as conn:
            lease = start_run(conn, tenant.id, "full")

        async def go() -> None:
            async with httpx.AsyncClient(timeout=60) as http:
                source = SourceRegistry(http, MemoryBreakerStore()).source(tenant)
                source.budget = RateBudget(limit=UNLIMITED)  # type: ignore[attr-defined]  # both kinds have one
                await run_reconcile(engine, source, tenant, lease, page_size=page_size)

        requests_before = requests_served(admin_url)
        server = postgres_cpu_seconds if args.child == "postgresql" else (lambda: 0.0)  # SQLite: the client's
        before = {"client": _own_cpu(), "database": server(), "sandbox": cpu_seconds(args.sandbox_pid)}
        started = time.perf_counter()
        asyncio.run(go())
        elapsed = time.perf_counter() - started
        after = {"client": _own_cpu(), "database": server(), "sandbox": cpu_seconds(args.sandbox_pid)}
        with engine.connect() as conn:
            _position, counts = load_position(conn, lease)
    print(json.dumps({"elapsed": elapsed, "inserted": counts.inserted, "page_size": page_size,
                      "requests": requests_served(admin_url) - requests_before,
                      "cpu": {k: after[k] - before[k] for k in after}}))


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, api: str, box: Any, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.rest", "--child", name, "--source", api, "--base-url", box.base_url,
         "--postgres-url", args.postgres_url, "--sandbox-pid", str(box.process.pid)],
        check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--api", nargs="+", default=["pems"], choices=("pems", "ppb-premises", "hie-facilities"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--child", choices=("sqlite", "postgresql"), help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--sandbox-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    n = args.records
    print(f"starting the sandboxes: FHIR with {n:,} resources, {', '.join(args.api)} with {n:,} records each …",
          flush=True)
    boxes: dict[str, Any] = {"fhir": RemoteSandbox(n, (datetime.now(UTC) - timedelta(days=1)).date())}
    try:
        for api in args.api:
            boxes[api] = RestSandboxProcess(api, n)
        names = [name for name in ("sqlite", "postgresql") if not args.only or args.only == name]
        rates: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            order = ["fhir", *args.api] if round_ % 2 == 0 else [*args.api, "fhir"]
            for name in names:
                for api in order:
                    r = measure(name, api, boxes[api], args)
                    rate = r["inserted"] / r["elapsed"]
                    rates.setdefault((name, api), []).append(rate)
                    per = {k: v / max(r["inserted"], 1) * 1e6 for k, v in r["cpu"].items()}
                    server = f", database server {per['database']:.0f} µs" if name == "postgresql" else ""
                    print(f"round {round_ + 1} {name:<10} {api:<15} full: {r['inserted']:,} rows in {r['elapsed']:.1f} s"
                          f" = {rate:,.0f} records/s; {r['requests']} requests of up to {r['page_size']:,}; CPU per "
                          f"record: client {per['client']:.0f} µs, sandbox {per['sandbox']:.0f} µs{server}", flush=True)
        print()
        for name in names:
            fhir = rates[(name, "fhir")]
            for api in args.api:
                rest = rates[(name, api)]
                ratios = [r / f for r, f in zip(rest, fhir, strict=True)]
                below = sum(ratio < 1 for ratio in ratios)
                print(f"{name:<10} {api:<15} {' · '.join(f'{r:,.0f}' for r in rest)} records/s vs FHIR "
                      f"{' · '.join(f'{f:,.0f}' for f in fhir)}: REST ÷ FHIR per round "
                      f"{' · '.join(f'{ratio:.2f}' for ratio in ratios)} ("
                      + (f"below the FHIR reconcile in {below} of {len(ratios)} rounds)" if below
                         else "at least the FHIR reconcile's rate in every round)"))
    finally:
        for box in boxes.values():
            box.stop()


if __name__ == "__main__":
    main()
