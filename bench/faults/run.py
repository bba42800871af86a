"""One run of the matrix: start everything, load, change records in rounds while the fault acts, drain, check."""
from __future__ import annotations

import base64
import json
import os
import random
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from sqlalchemy import select, text

from bench.faults.checks import (
    acknowledged_but_missing,
    crossed_rows,
    foreign_rows,
    missing_deliveries,
    overlapping_runs,
)
from bench.faults.host import LOOP_LAG_REPORTED
from bench.faults.parts import (
    BREAKER_COOLDOWN,
    BREAKER_FAILURES,
    DRAIN_LIMIT,
    DRAIN_TIMEOUT,
    NEVER,
    REST_APIS,
    ROOT,
    SCHEMES,
    Fault,
    Host,
    Outcome,
    Run,
    Tenant,
    fresh_database,
    notifier,
    tail,
)
from devtools.compare import compare, live_in_snapshot, mirrored, rest_mirrored, rest_truth
from devtools.localhost.azurite import free_port, start_azurite_queue, stop
from devtools.sandbox.data import SandboxData
from devtools.sandbox.notify import WebhookConfig
from devtools.sandbox.rest.apis import build_api
from devtools.sandbox.rest.server import RestConfig, RestSandbox
from devtools.sandbox.server import Sandbox, SandboxConfig
from devtools.synthetic import SyntheticCounts
from shared.bootstrap import azurite_connection_string
from shared.queues.azure import AzureQueues
from shared.queues.messages import CHANGES_QUEUE, RECONCILE_QUEUE, ReconcileMessage, encode
from shared.queues.port import poison_name
from shared.settings import load_settings, parse_tenants
from shared.store.engine import create_store_engine
from shared.store.schema import sync_runs


def run_case(fault: Fault, seed: int, events: int, database: str, postgres_url: str,
             say: Callable[[str], None] = print) -> Outcome:
    started = time.monotonic()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix=f"fault-{fault.name}-") as tmp_name:
        tmp = Path(tmp_name)
        azurite_port = free_port()
        azurite_proc, queue_url = start_azurite_queue(tmp / "azurite.log", port=azurite_port, location=tmp / "queues")
        azurite = {"proc": azurite_proc, "port": azurite_port, "url": queue_url, "folder": tmp / "queues",
                   "log": tmp / "azurite.log"}
        tenants: list[Tenant] = []
        host: Host | None = None
        sending = fault.notifier(seed) if callable(fault.notifier) else fault.notifier
        try:
            # The process id too: two harnesses on one server (the matrix and make test) never share one.
            name = f"fault_{fault.name.replace('-', '_')}_{seed}_{os.getpid()}"
            host_port = free_port()
            for n, (scheme, header) in enumerate(SCHEMES):
                secret = (f"whsec_{base64.b64encode(secrets.token_bytes(24)).decode()}"
                          if scheme == "standard-webhooks" else secrets.token_urlsafe(24))
                hook = WebhookConfig(url=f"http://127.0.0.1:{host_port}/api/webhooks/t{n}/{{event}}",
                                     scheme=scheme, secret=secret, header=header, backoff=0.05, max_attempts=8,
                                     seed=seed * 10 + n, **{"senders": 2, **sending})
                # Big enough that a run's deletions stay under the full reconcile's mass-deletion
                # cap (5% of a table): above it, deletes are refused by design and show as unexpected.
                data = SandboxData(SyntheticCounts(2, 400, 1200, 300), seed=seed * 10 + n,
                                   anchor=datetime.now(UTC))
                box = Sandbox(data, SandboxConfig(rate_limit=0, webhook=hook, **fault.sandbox)).start()
                tenants.append(Tenant(f"t{n}", box, secret, scheme))
            for n, (api, records, page_size) in enumerate(REST_APIS if fault.rest else (), start=len(tenants)):
                secret = secrets.token_urlsafe(24)
                options = {"backoff": 0.05, "max_attempts": 8, "seed": seed * 10 + n, "senders": 2, **sending}
                config = RestConfig(rate_limit=0, webhook_url=f"http://127.0.0.1:{host_port}/api/webhooks/t{n}/events",
                                    webhook_secret=secret, webhook_options=options, **fault.sandbox)
                rest_box = RestSandbox(build_api(api, seed=seed * 10 + n, records=records), config).start()
                tenants.append(Tenant(f"t{n}", rest_box, secret, "hmac-sha256", api=api, page_size=page_size))
            if fault.bad_tenant:
                tenants[2].client_secret, tenants[2].syncs = "wrong-secret", False
            configs = parse_tenants(json.dumps([t.config() for t in tenants]), source="the fault matrix's tenants")
            with fresh_database(database, tmp, name, postgres_url, configs) as url:
                env = {**os.environ, "PYTHONPATH": str(ROOT), "SYNC_DATABASE_URL": url,
                       "SYNC_TENANTS_JSON": json.dumps([t.config() for t in tenants]),
                       "AzureWebJobsStorage": azurite_connection_string(queue_url), "SYNC_FANOUT_SCHEDULE": NEVER,
                       "SYNC_RECONCILE_TIME_BUDGET": "10", "SYNC_LOG_LEVEL": "WARNING",
                       "SYNC_BREAKER_FAILURES": str(BREAKER_FAILURES), "SYNC_BREAKER_COOLDOWN": str(BREAKER_COOLDOWN),
                       "SYNC_CREDENTIALS_RETRY_AFTER": "3",
                       "FAILPOINTS": "", "FAILPOINTS_SEED": str(seed), **fault.env}
                host = Host(env, host_port, tmp / "host.log").start()
                engine = create_store_engine(load_settings(database_url=url))
                queues = AzureQueues.from_connection_string(azurite_connection_string(queue_url))
                run = Run(fault, seed, rng, tenants, host, queues, engine, azurite, database)
                if sending.get("repeat", 1) > 1:
                    run.count("copies of each webhook", sending["repeat"])
                try:
                    outcome = _run(run, events, started, env, say)
                    if not outcome.passed:  # was the app's event loop stalled when it went wrong?
                        stalls = [line for line in tail(tmp / "host.log", 10_000).splitlines()
                                  if line.startswith("event loop late")]
                        say(f"  the host's event loop: {len(stalls)} stalls over {LOOP_LAG_REPORTED} s"
                            + "".join(f"\n    {line}" for line in stalls[-30:]))
                    return outcome
                except Exception:
                    say(f"  the host's log ends:\n{tail(tmp / 'host.log')}")
                    raise
                finally:
                    engine.dispose()
        finally:
            if host is not None:
                host.stop()
            for tenant in tenants:
                tenant.sandbox.stop()
            stop(cast(subprocess.Popen[bytes], azurite["proc"]))


def _run(run: Run, events: int, started: float, env: dict[str, str], say: Callable[[str], None]) -> Outcome:
    fault, tenants = run.fault, run.tenants
    reconcile_all(run, "full", [t for t in tenants if t.syncs])
    if fault.failpoints:  # armed only now: the initial load is not the fault
        run.host.restart({**env, "FAILPOINTS": fault.failpoints})
    if fault.before:
        fault.before(run)
    rounds = 20
    made = 0
    for round_ in range(rounds):
        share = (events - made) // (rounds - round_)
        for n, tenant in enumerate(tenants):
            size = share // len(tenants) + (1 if n < share % len(tenants) else 0)
            creates, deletes = size // 5, size // 20
            made += tenant.churn(creates, size - creates - deletes, deletes)
        if fault.during:
            fault.during(run, round_, rounds)
        time.sleep(0.25)
    if fault.after:
        fault.after(run)
    unexpected = 0
    if fault.bad_tenant:
        unexpected += fix_credentials(run, env)
    elif not drain(run):
        # Slow is not lost: a loaded machine (matrix lanes side by side) can take longer to apply
        # everything. Count lost only once the queues are empty, and fail the run on its time only
        # past the hard limit.
        began = time.monotonic()
        drained = drain(run, DRAIN_LIMIT - DRAIN_TIMEOUT)
        run.notes.append(f"drained {DRAIN_TIMEOUT + time.monotonic() - began:.0f} s after the rounds"
                         if drained else f"did not drain within {DRAIN_LIMIT:.0f} s")
        if not drained:
            run.violations.append(f"the queues did not drain within {DRAIN_LIMIT:.0f} s")
    lost = acknowledged_but_missing(run)
    for tenant in tenants:
        if tenant.rest:
            run.count(f"{tenant.id} ({tenant.api}) events acknowledged",
                      sum(d["status"] == "delivered" for d in notifier(tenant).deliveries()))
    reconcile_all(run, "full", tenants)
    host_log = tail(run.host.log, 10**7)
    for tenant in tenants:
        if tenant.rest:  # full runs that listed an entity without a read twice (docs/reconcile.md)
            run.count(f"{tenant.id} fulls listed again",
                      len(re.findall(rf"tenant={tenant.id} kind=full run=\S+ outcome=listing-again", host_log)))
            settings = tenant.settings()
            difference = compare(rest_mirrored(run.engine, settings), rest_truth(tenant.sandbox.api, settings))
        else:
            snapshot = tenant.sandbox.data.snapshot()
            difference = compare(mirrored(run.engine, tenant.id), live_in_snapshot(snapshot))
            unexpected += crossed_rows(run, tenant, snapshot)
        lost += len(difference.lost)
        unexpected += len(difference.unexpected)
        if not difference.equal:
            run.notes.append(f"{tenant.id}: {difference.summary(3)}")
    unexpected += foreign_rows(run)
    with run.engine.connect() as conn:
        regressions = conn.execute(text("SELECT COUNT(*) FROM fault_regressions")).scalar_one()
    overlapping_runs(run)
    poison = sum(run.queues.count(poison_name(q)) for q in (CHANGES_QUEUE, RECONCILE_QUEUE)) - fault.poison(run)
    made += run.extra_events
    if fault.failpoints and not run.host.crashes:
        run.violations.append("the failpoint never fired: the fault did not bite")
    outcome = Outcome(fault.name, run.seed, made, lost, unexpected, int(regressions), poison,
                      time.monotonic() - started, run.host.crashes, run.notes, run.violations)
    say(f"  {fault.name} seed {run.seed}: {made:,} events, lost {lost}, unexpected {unexpected}, regressions "
        f"{regressions}, poison {poison}, crashes {run.host.crashes} ({outcome.seconds:.0f} s)"
        + "".join(f", {name} {count}" for name, count in run.counters.items())
        + (f" — FAILED CHECKS: {'; '.join(run.violations)}" if run.violations else "")
        + (f" — {'; '.join(run.notes)}" if run.notes else ""))
    return outcome


def fix_credentials(run: Run, env: dict[str, str]) -> int:
    """bad-credentials: the other tenants must apply all their acknowledged changes while every
    change of the refused tenant stays on the queue (put back, not poisoned) and none of its rows
    appear; then its secret is fixed (a new app setting restarts the app) and its parked changes
    must apply. Returns the rows it had anyway."""
    bad = next(t for t in run.tenants if not t.syncs)
    healthy = [t for t in run.tenants if t.syncs]
    notifiers_done = all(notifier(t).drain(DRAIN_TIMEOUT) for t in run.tenants)
    parked = sum(1 for d in notifier(bad).deliveries() if d["status"] == "delivered")
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline and any(missing_deliveries(run, t, note=False) for t in healthy):
        run.host.check()
        time.sleep(0.5)
    if not notifiers_done or any(missing_deliveries(run, t, note=False) for t in healthy):
        run.violations.append(f"the others did not keep syncing while {bad.id}'s credentials were refused")
    # Every parked delivery is still a message (duplicate enqueues of one delivery may add more).
    waiting = run.queues.count(CHANGES_QUEUE)
    poisoned = sum(run.queues.count(poison_name(q)) for q in (CHANGES_QUEUE, RECONCILE_QUEUE))
    if waiting < parked or poisoned:
        run.violations.append(f"{bad.id}: {parked} changes acknowledged, {waiting} messages waiting, "
                              f"{poisoned} poisoned while its credentials were refused")
    run.count("parked", parked)
    run.count("messages waiting", waiting)
    rows = len(mirrored(run.engine, bad.id))
    bad.client_secret, bad.syncs = "sandbox-secret", True
    run.host.restart({**env, "SYNC_TENANTS_JSON": json.dumps([t.config() for t in run.tenants])})
    if not drain(run):
        run.notes.append("did not drain within the time limit after the credentials were fixed")
    return rows


def reconcile_all(run: Run, kind: str, tenants: list[Tenant], timeout: float = 120) -> None:
    after = datetime.now(UTC) - timedelta(seconds=1)
    for tenant in tenants:
        run.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant.id, reconcile=kind)))
    c = sync_runs.c
    deadline = time.monotonic() + timeout
    pending = {t.id for t in tenants}
    while pending and time.monotonic() < deadline:
        run.host.check()
        with run.engine.connect() as conn:
            for tenant_id in list(pending):
                status = conn.execute(select(c.status).where(c.tenant_id == tenant_id, c.kind == kind,
                                                             c.started_at >= after).order_by(c.started_at)
                                      .limit(1)).scalar()
                if status == "completed":
                    pending.discard(tenant_id)
                elif status in ("failed", "failed_stale", "cancelled"):
                    raise RuntimeError(f"{kind} reconcile of {tenant_id} ended {status}")
        time.sleep(0.1)
    if pending:
        raise RuntimeError(f"{kind} reconcile of {sorted(pending)} did not finish within {timeout:.0f} s")


def drain(run: Run, timeout: float = DRAIN_TIMEOUT) -> bool:
    """Every notifier done and both queues empty (in flight and delayed messages included) for 2 s.
    When the time runs out, a note says what was still busy."""
    deadline = time.monotonic() + timeout
    for tenant in run.tenants:
        if not notifier(tenant).drain(max(deadline - time.monotonic(), 1)):
            pending = sum(d["status"] == "pending" for d in notifier(tenant).deliveries())
            run.notes.append(f"{tenant.id}'s notifier still sending ({pending} deliveries pending)")
            return False
    quiet_since = None
    while time.monotonic() < deadline:
        run.host.check()
        try:
            busy = sum(run.queues.count(q) for q in (CHANGES_QUEUE, RECONCILE_QUEUE))
        except Exception:
            busy = 1
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 2:
            return True
        time.sleep(0.1)
    run.notes.append(f"{busy} messages still queued")
    return False
