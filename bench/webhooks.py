"""Webhooks through the local host with Azurite: acknowledgement latency at a sustained rate, and
the lag from an event to its row.

    python -m bench.webhooks [--rate 200] [--seconds 15] [--database sqlite|postgresql]

Three processes besides this one, as in production: the sandbox (the source), Azurite (the
queues) and `python -m shared.cli serve` (the function app on the local host). This process is
the sender: every 50 ms it makes the sandbox change records (`POST /_sandbox/churn`) and sends a
signed Backport notification for each change to the host at once, on an open-loop schedule (a
slow answer does not slow the sending, so queueing shows in the latency). It prints the
acknowledgement latency (p50/p99, every answer 202), the rate reached, and — once the apply
function drained the queue — the lag from each event's timestamp to its row's `last_synced_at`
(p50/p95, events whose id changed once in the run, so the row's write is that event's).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import Engine, select

from bench.common import (
    DEFAULT_POSTGRES_URL,
    cpu_seconds,
    percentile,
    postgres_cpu_seconds,
    postgres_engine,
    sqlite_engine,
    wait_for,
)
from devtools.localhost.azurite import free_port, start_azurite_queue, stop
from devtools.sandbox.data import Change
from devtools.sandbox.notify import event_name, halaxy_bundle
from shared.bootstrap import azurite_connection_string
from shared.fhir.transform import TABLE_FOR_TYPE
from shared.store.metrics import read_metrics
from shared.store.schema import MIRRORED_TABLES

HEADER = "X-Webhook-Secret"
NEVER = "0 0 0 1 1 *"


async def _connection(port: int, jobs: asyncio.Queue[tuple[float, str, bytes] | None], secret: str,
                      latencies: list[float], statuses: list[int]) -> None:
    """One keep-alive HTTP/1.1 connection sending queued webhooks. Written by hand, not with
    httpx: at 200 requests/s httpx's pool bookkeeping cost this process most of a core, which the
    host under test then lacked (both share two cores)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (job := await jobs.get()) is not None:
            due, path, body = job
            writer.write((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
                          f"{HEADER}: {secret}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            # From when it was due, not when a connection got free: queueing counts.
            latencies.append(time.perf_counter() - due)
            statuses.append(int(status_line.split()[1]))
    finally:
        writer.close()


async def send(port: int, source: str, secret: str, rate: int, seconds: float, connections: int = 32) -> tuple[
        list[float], list[int], dict[tuple[str, str], list[datetime]]]:
    latencies: list[float] = []
    statuses: list[int] = []
    events: dict[tuple[str, str], list[datetime]] = {}
    numbers: dict[str, int] = {}
    jobs: asyncio.Queue[tuple[float, str, bytes] | None] = asyncio.Queue()
    workers = [asyncio.create_task(_connection(port, jobs, secret, latencies, statuses)) for _ in range(connections)]
    tick = 0.05
    async with httpx.AsyncClient(timeout=120) as http:
        start = time.perf_counter()
        for n in range(int(seconds / tick)):
            await asyncio.sleep(max(0.0, start + n * tick - time.perf_counter()))
            per_tick = int(rate * tick * (n + 1)) - int(rate * tick * n)  # exact over the run
            if not per_tick:
                continue
            churned = await http.post(f"{source.rsplit('/', 1)[0]}/_sandbox/churn", json={"updates": per_tick})
            now, due = datetime.now(UTC), time.perf_counter()
            for c in churned.json()["changes"]:
                change = Change(c["type"], c["id"], c["action"], int(c["versionId"]), now)
                events.setdefault((change.type, change.id), []).append(now)
                event = event_name(change)
                numbers[event] = numbers.get(event, 0) + 1
                body = json.dumps(halaxy_bundle(change, source, numbers[event]), separators=(",", ":")).encode()
                jobs.put_nowait((due, f"/api/webhooks/bench/{event}", body))
    for _ in workers:
        jobs.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies, statuses, events


def lags(engine: Engine, events: dict[tuple[str, str], list[datetime]]) -> list[float]:
    out = []
    with engine.connect() as conn:
        for (kind, rid), stamps in events.items():
            if len(stamps) != 1:
                continue
            table = MIRRORED_TABLES[TABLE_FOR_TYPE[kind]]
            synced = conn.execute(select(table.c.last_synced_at).where(table.c.tenant_id == "bench",
                                                                        table.c.source_id == rid)).scalar()
            if synced is not None:
                out.append((synced - stamps[0]).total_seconds())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=200, help="webhooks per second (default 200)")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    azurite, queue_url = start_azurite_queue(tmp / "azurite.log")
    sandbox_port, host_port = free_port(), free_port()
    sandbox = subprocess.Popen([sys.executable, "-m", "shared.cli", "sandbox", "--port", str(sandbox_port),
                                "--rate-limit", "600000", "--patients", "5000", "--appointments", "20000",
                                "--invoices", "4000"], cwd=root, stdout=subprocess.PIPE, text=True)
    assert sandbox.stdout is not None
    sandbox.stdout.readline()
    source = f"http://127.0.0.1:{sandbox_port}/main"
    secret = secrets.token_urlsafe(24)
    tenants = tmp / "tenants.json"
    tenants.write_text(json.dumps([{"id": "bench", "name": "Bench", "fhir_base_url": source,
                                    "client_id": "sandbox-client", "client_secret": "sandbox-secret",
                                    "webhook_scheme": "halaxy", "webhook_secrets": [secret], "webhook_header": HEADER,
                                    "schedule": NEVER, "hot_schedule": NEVER, "full_schedule": NEVER}]))
    database = sqlite_engine() if args.database == "sqlite" else postgres_engine(args.postgres_url,
                                                                                  "fhir_mirror_bench_webhooks")
    host = None
    try:
        with database as engine:
            env = {**os.environ, "PYTHONPATH": str(root), "SYNC_DATABASE_URL": engine.url.render_as_string(False),
                   "SYNC_TENANTS_FILE": str(tenants), "SYNC_LOG_LEVEL": "WARNING",
                   "AzureWebJobsStorage": azurite_connection_string(queue_url)}
            # The mirror starts loaded, as a production tenant's is, and no reconcile runs during the
            # measurement (the fan-out timer never fires): what is measured is webhooks alone.
            env["SYNC_FANOUT_SCHEDULE"] = NEVER
            loaded = time.perf_counter()
            for command in (["migrate"], ["reconcile", "--tenant", "bench", "--kind", "full", "--page-size", "1000"]):
                subprocess.run([sys.executable, "-m", "shared.cli", *command], cwd=root, env=env, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"initial full reconcile of the sandbox: {time.perf_counter() - loaded:.1f} s", flush=True)
            with (tmp / "host.log").open("wb") as host_log:  # the child keeps its own copy of the handle
                host = subprocess.Popen([sys.executable, "-m", "shared.cli", "serve", "--port", str(host_port)],
                                        cwd=root, env=env, stdout=host_log, stderr=subprocess.STDOUT)
            base = f"http://127.0.0.1:{host_port}"
            wait_for(f"{base}/admin/host/status")
            print(f"sending {args.rate} webhooks/s for {args.seconds:.0f} s to the local host "
                  f"({args.database}, queues in Azurite) …", flush=True)
            processes = {"host": host.pid, "azurite": azurite.pid, "sandbox": sandbox.pid, "sender (this)": os.getpid()}

            def cpu() -> dict[str, float]:
                return {**{name: cpu_seconds(pid) for name, pid in processes.items()},
                        "postgresql": postgres_cpu_seconds() if args.database == "postgresql" else 0.0}

            cpu_before = cpu()
            started = time.perf_counter()
            latencies, statuses, events = asyncio.run(send(host_port, source, secret, args.rate, args.seconds))
            elapsed = time.perf_counter() - started
            accepted = sum(1 for s in statuses if s == 202)
            print(f"sent {len(statuses):,} in {elapsed:.1f} s ({len(statuses) / elapsed:,.0f}/s): {accepted:,} × 202, "
                  f"other answers: {sorted(set(statuses) - {202}) or 'none'}")
            print(f"acknowledgement latency: p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
                  f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    status = httpx.get(f"{base}/admin/host/status", timeout=30).json()["queues"]["changes"]
                except httpx.HTTPError:
                    continue  # the host is busy; ask again
                if status["depth"] == 0 and status["handled"] >= accepted:
                    break
                time.sleep(0.2)
            drained = time.perf_counter() - started
            used = {name: spent - cpu_before[name] for name, spent in cpu().items()}
            print(f"CPU per webhook, send to drained ({os.cpu_count()} cores, {sum(used.values()) / drained:.0%} of one "
                  "busy on average): " + ", ".join(f"{name} {spent / len(statuses) * 1000:.2f} ms"
                                                    for name, spent in used.items() if spent))
            per_webhook = sum(used.values()) / len(statuses)
            print(f"ceiling on this machine: {(os.cpu_count() or 1) / per_webhook:,.0f} webhooks/s with every process "
                  f"here busy all the time; the app process alone (one core, the GIL): "
                  f"{len(statuses) / used['host']:,.0f}/s")
            measured = lags(engine, events)
            print(f"queue drained {drained - elapsed:.1f} s after the last send; changes handled: "
                  f"{status['handled']:,}, poisoned: {status['poisoned']}")
            if measured:
                print(f"event → row lag ({len(measured):,} events changed once): p50 "
                      f"{percentile(measured, 0.5) * 1000:.0f} ms, p95 {percentile(measured, 0.95) * 1000:.0f} ms, "
                      f"mean {statistics.fmean(measured) * 1000:.0f} ms")
            host.send_signal(signal.SIGTERM)  # a clean stop writes the last second of metrics
            host.wait(timeout=30)
            with engine.connect() as conn:
                counted = read_metrics(conn, "bench")
            print("metrics: " + ", ".join(f"{k} {v:,}" for k, v in counted.items() if not k.startswith("lag.")))
    finally:
        if host is not None and host.poll() is None:
            host.kill()
        sandbox.terminate()
        stop(azurite)


if __name__ == "__main__":
    main()
