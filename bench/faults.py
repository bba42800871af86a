"""The fault matrix: real work flows, one fault is injected, then what the source acknowledged is
compared with what the mirror holds.

    python -m bench.faults [--runs 20] [--seed 1] [--events 2000] [--fault NAME …] [--database sqlite|postgresql]
    python -m bench.faults --list

Each run starts, on loopback: Azurite (kept on disk in a temporary folder, so it can be stopped
and started again), a fresh database with triggers that log any write moving a row to an older
version, three sandbox sources (one tenant each, the same ids in all three, one webhook scheme
each: halaxy, hmac-sha256, standard-webhooks) and the function app on the local host in a child
process (restarted when a failpoint crashes it). Every tenant is fully loaded, then the sandboxes
change ``--events`` records in rounds while their webhooks flow and the fault acts; then
everything drains, and the run checks:

- **lost** — a delivery the app acknowledged (2xx) whose change is not in the mirror after the
  drain (before any repair), plus, after one full reconcile per tenant, every (type, id,
  version) live at a source and not in that tenant's mirror;
- **unexpected** — rows in a mirror its source does not have (or on another version), and rows
  under a tenant id that is not one of the run's;
- **regressions** — updates that moved a row to an older (lastUpdated, versionId), from the
  triggers' log: every write is checked, not only the final state;
- **poison** — messages in the poison queues beyond what the fault put there on purpose;
- **failed checks** — a fault's own expectations: a replayed or oversized delivery refused, the
  breaker opening in an outage with the requests reaching the dead source bounded.

A run passes when all five are zero. The table printed at the end has one row per fault.
``tests/e2e/test_faults.py`` runs a fast subset (a few faults, one short run each) in ``make test``.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from bench.common import DEFAULT_POSTGRES_URL, wait_for
from devtools.compare import compare, live_in_snapshot, mirrored
from devtools.localhost.azurite import free_port, start_azurite_queue, stop
from devtools.sandbox.data import SandboxData
from devtools.sandbox.notify import BACKPORT_STATUS_PROFILE, Notifier, WebhookConfig
from devtools.sandbox.server import Sandbox, SandboxConfig
from devtools.synthetic import SyntheticCounts
from shared.bootstrap import azurite_connection_string
from shared.failpoints import CRASH_EXIT_CODE
from shared.fhir.transform import TABLE_FOR_TYPE
from shared.queues.azure import AzureQueues
from shared.queues.messages import CHANGES_QUEUE, RECONCILE_QUEUE, ChangeMessage, ReconcileMessage, encode
from shared.queues.port import poison_name
from shared.settings import load_settings
from shared.source.retry import parse_retry_after
from shared.store.engine import create_store_engine
from shared.store.migrate import migrate
from shared.store.schema import MIRRORED_TABLES, sync_runs
from shared.webhooks.signatures import standard_webhooks_signature

ROOT = Path(__file__).resolve().parents[1]
NEVER = "0 0 0 1 1 *"
SCHEMES = (("halaxy", "X-Webhook-Secret"), ("hmac-sha256", "X-Webhook-Signature"), ("standard-webhooks", ""))
# The host as the harness runs it: a short function timeout, so a message held by a crashed
# worker comes back in seconds rather than the production 10 minutes, and a quick retry.
HOST_JSON = {"version": "2.0", "functionTimeout": "00:00:20", "extensions": {"queues": {
    "messageEncoding": "none", "maxDequeueCount": 5, "visibilityTimeout": "00:00:01", "batchSize": 16,
    "newBatchThreshold": 8, "maxPollingInterval": "00:00:01"}}}
DRAIN_TIMEOUT = 240.0
DRAIN_LIMIT = 600.0  # past DRAIN_TIMEOUT a run only notes its slowness; past this it fails
WEBHOOK_TIMEOUT = 10.0  # the harness's own deliveries; the sandbox's notifier has its own
MAX_START_CRASHES = 20  # in a row, while the host starts: beyond that the failpoint is not random
BREAKER_FAILURES, BREAKER_COOLDOWN = 5, 2.0  # the app's breaker in the harness (production: 5 and 30 s)


# -- the parts ---------------------------------------------------------------------------------
class Host:
    """The function app on the local host, in a child process that a failpoint may crash."""

    def __init__(self, env: dict[str, str], port: int, log: Path, command: list[str] | None = None) -> None:
        self.env, self.port, self.log = env, port, log
        self.command = command or [sys.executable, "-m", "bench.faults", "host", "--port", str(port)]
        self.crashes = 0
        self.spawns = 0
        self.failure: str | None = None
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._supervise, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Host:
        self._spawn()
        self._watch.start()
        return self

    def _spawn(self) -> None:
        """Start the host and wait until it answers. A host that crashes at a failpoint while it
        starts (messages were waiting for it) is one more crash, and is started again."""
        for _ in range(MAX_START_CRASHES):
            # Each process draws its own failpoint sequence: with one seed for all, a restarted
            # host would crash at the very same apply again and again.
            self.spawns += 1
            env = {**self.env, "FAILPOINTS_SEED": f"{self.env.get('FAILPOINTS_SEED', '')}-{self.spawns}"}
            with self.log.open("ab") as out:
                proc = self.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=out,
                                                    stderr=subprocess.STDOUT)
            try:
                wait_for(f"{self.url}/admin/host/status", process=proc)
                return
            except RuntimeError:
                if proc.poll() != CRASH_EXIT_CODE:
                    raise
                self.crashes += 1
        raise RuntimeError(f"the host crashed {MAX_START_CRASHES} times in a row while starting; see {self.log}")

    def _supervise(self) -> None:
        """A crashed host is started again, as the Functions runtime does with a dead worker."""
        while not self._stopping.is_set():
            with self._lock:
                proc = self.proc
                if proc is not None and proc.poll() is not None and not self._stopping.is_set():
                    if proc.returncode != CRASH_EXIT_CODE:
                        self.failure = f"the host exited with {proc.returncode}; see {self.log}"
                        return
                    self.crashes += 1
                    try:
                        self._spawn()
                    except RuntimeError as exc:
                        self.failure = str(exc)
                        return
            time.sleep(0.05)

    def restart(self, env: dict[str, str]) -> None:
        """Stop the host and start it again with ``env`` (to arm failpoints after the initial load)."""
        with self._lock:
            self.env = env
            if self.proc is not None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=15)
            self._spawn()

    def check(self) -> None:
        if self.failure:
            raise RuntimeError(self.failure)

    def stop(self) -> None:
        self._stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# Any update to an older (lastUpdated, versionId) is logged; the version guard should make it
# impossible, and the log proves it for every write of the run, not just the last.
_REGRESSION_LOG = ("CREATE TABLE fault_regressions (table_name VARCHAR(64), tenant_id VARCHAR(64), "
                   "source_id VARCHAR(64), old_version VARCHAR(64), new_version VARCHAR(64))")
_OLDER = ("NEW.source_updated_at < OLD.source_updated_at OR (NEW.source_updated_at = OLD.source_updated_at "
          "AND COALESCE(NEW.source_version_seq, 0) < COALESCE(OLD.source_version_seq, 0))")


def install_regression_log(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(_REGRESSION_LOG))
        for table in MIRRORED_TABLES:
            insert = (f"INSERT INTO fault_regressions VALUES ('{table}', NEW.tenant_id, NEW.source_id, "
                      "OLD.source_version, NEW.source_version)")
            if engine.dialect.name == "sqlite":
                conn.execute(text(f"CREATE TRIGGER fault_{table} AFTER UPDATE ON {table} WHEN {_OLDER} "
                                  f"BEGIN {insert}; END"))
            else:
                conn.execute(text(f"CREATE FUNCTION fault_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                                  f"BEGIN IF {_OLDER} THEN {insert}; END IF; RETURN NEW; END $$"))
                conn.execute(text(f"CREATE TRIGGER fault_{table} AFTER UPDATE ON {table} FOR EACH ROW "
                                  f"EXECUTE FUNCTION fault_{table}()"))


@contextmanager
def fresh_database(kind: str, folder: Path, name: str, postgres_url: str) -> Iterator[str]:
    """A migrated, empty database with the regression log; its URL."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'mirror.db'}"
        admin = None
    else:
        admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        settings = load_settings(database_url=url)
        migrate(settings)
        engine = create_store_engine(settings)
        install_regression_log(engine)
        engine.dispose()
        yield url
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


@dataclass
class Tenant:
    id: str
    sandbox: Sandbox
    secret: str
    scheme: str
    client_secret: str = "sandbox-secret"
    syncs: bool = True  # False: its credentials are wrong on purpose

    def config(self) -> dict[str, Any]:
        header = dict(SCHEMES)[self.scheme]
        return {"id": self.id, "name": self.id, "timezone": "Australia/Sydney", "fhir_base_url": self.sandbox.base_url,
                "client_id": "sandbox-client", "client_secret": self.client_secret, "webhook_scheme": self.scheme,
                "webhook_secrets": [self.secret], **({"webhook_header": header} if header else {}),
                "schedule": NEVER, "hot_schedule": NEVER, "full_schedule": NEVER}


def notifier(tenant: Tenant) -> Notifier:
    """The tenant's sandbox notifier: every tenant of the matrix has webhooks configured."""
    assert tenant.sandbox.notifier is not None
    return tenant.sandbox.notifier


@dataclass
class Run:
    """One run's parts, handed to the fault's hooks."""

    fault: Fault
    seed: int
    rng: random.Random
    tenants: list[Tenant]
    host: Host
    queues: AzureQueues
    engine: Engine
    azurite: dict[str, Any]
    database: str
    notes: list[str] = field(default_factory=list)
    extra_events: int = 0  # changes a fault made besides the churn
    counters: dict[str, int] = field(default_factory=dict)  # what the fault did, for the log line
    violations: list[str] = field(default_factory=list)  # the fault's own checks that failed
    outage: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:  # sandbox threads count too
            self.counters[name] = self.counters.get(name, 0) + n

    def peak(self, name: str, value: int) -> None:
        with self.lock:
            self.counters[name] = max(self.counters.get(name, 0), value)

    def send_webhook(self, tenant: Tenant, event: str, body: bytes, headers: dict[str, str]) -> int:
        """The harness's own deliveries (the sandbox's notifier sends the rest); the slowest answer
        is on the run's line, and one that does not come says which delivery it was."""
        began = time.monotonic()
        try:
            status = httpx.post(f"{self.host.url}/api/webhooks/{tenant.id}/{event}", content=body, headers=headers,
                                timeout=WEBHOOK_TIMEOUT).status_code
        except httpx.TimeoutException as exc:
            raise RuntimeError(f"the harness's {len(body):,}-byte {event} webhook to {tenant.id} had no answer "
                               f"within {WEBHOOK_TIMEOUT:.0f} s ({exc.__class__.__name__})") from exc
        self.peak(f"slowest harness webhook ms ({status})", round((time.monotonic() - began) * 1000))
        return status


Hook = Callable[[Run], None]
RoundHook = Callable[[Run, int, int], None]  # (run, round, rounds)


@dataclass
class Fault:
    name: str
    about: str
    # WebhookConfig fields, or a function of the run's seed that returns them
    notifier: dict[str, Any] | Callable[[int], dict[str, Any]] = field(default_factory=dict)
    sandbox: dict[str, Any] = field(default_factory=dict)  # SandboxConfig fields
    failpoints: str = ""
    databases: tuple[str, ...] = ("sqlite", "postgresql")
    env: dict[str, str] = field(default_factory=dict)  # app settings for this fault
    bad_tenant: bool = False  # the third tenant's client secret is wrong
    before: Hook | None = None  # after the initial load, before the churn
    during: RoundHook | None = None  # after each churn round
    after: Hook | None = None  # after the churn, before the drain
    poison: Callable[[Run], int] = lambda run: 0  # poison messages the fault put there on purpose


@dataclass
class Outcome:
    fault: str
    seed: int
    events: int
    lost: int
    unexpected: int
    regressions: int
    poison: int
    seconds: float
    crashes: int = 0
    notes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # the fault's own checks (a bound, a refusal)

    @property
    def passed(self) -> bool:
        return not (self.lost or self.unexpected or self.regressions or self.poison or self.violations)


# -- one run -----------------------------------------------------------------------------------
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
            with fresh_database(database, tmp, name, postgres_url) as url:
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
                if fault.bad_tenant:
                    tenants[2].client_secret, tenants[2].syncs = "wrong-secret", False
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
            changes = tenant.sandbox.data.churn(creates=creates, updates=size - creates - deletes, deletes=deletes)
            made += len(changes)
            notifier(tenant).notify(changes)
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
    reconcile_all(run, "full", tenants)
    for tenant in tenants:
        snapshot = tenant.sandbox.data.snapshot()
        difference = compare(mirrored(run.engine, tenant.id), live_in_snapshot(snapshot))
        lost += len(difference.lost)
        unexpected += len(difference.unexpected) + crossed_rows(run, tenant, snapshot)
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


def acknowledged_but_missing(run: Run) -> int:
    """Deliveries answered 2xx whose change the mirror does not hold (at that version or later)."""
    return sum(missing_deliveries(run, tenant) for tenant in run.tenants if tenant.syncs)


def missing_deliveries(run: Run, tenant: Tenant, *, note: bool = True) -> int:
    rows: dict[tuple[str, str], tuple[int, bool]] = {}
    with run.engine.connect() as conn:
        for kind, name in TABLE_FOR_TYPE.items():
            t = MIRRORED_TABLES[name]
            for sid, seq, deleted in conn.execute(select(t.c.source_id, t.c.source_version_seq,
                                                         t.c.deleted_at.is_not(None)).where(
                                                             t.c.tenant_id == tenant.id)):
                rows[(kind, sid)] = (seq or 0, bool(deleted))
    missing = 0
    for delivery in notifier(tenant).deliveries():
        if delivery["status"] != "delivered":
            continue
        seq, deleted = rows.get((delivery["type"], delivery["id"]), (-1, False))
        # A delete must have removed the row; a create or update must be there at its version or
        # later (a later version, or the delete that followed it, also covers it).
        ok = deleted if delivery["action"] == "delete" else (deleted or seq >= int(delivery["version"]))
        if not ok:
            missing += 1
            if note and len(run.notes) < 8:
                run.notes.append(f"acknowledged, not applied: {tenant.id} {delivery['type']}/{delivery['id']} "
                                 f"v{delivery['version']} {delivery['action']}")
    return missing


def overlapping_runs(run: Run) -> None:
    """At most one run of a tenant and kind at a time, however many messages asked for one."""
    c = sync_runs.c
    with run.engine.connect() as conn:
        rows = conn.execute(select(c.tenant_id, c.kind, c.started_at, c.finished_at, c.status)
                            .order_by(c.tenant_id, c.kind, c.started_at)).all()
    run.count("runs", len(rows))
    for before, after in itertools.pairwise(rows):
        if before.tenant_id == after.tenant_id and before.kind == after.kind and (
                before.finished_at is None or before.finished_at > after.started_at):
            run.violations.append(f"{after.tenant_id}: two {after.kind} runs at once ({before.status} and "
                                  f"{after.status})")


def crossed_rows(run: Run, tenant: Tenant, snapshot: list[dict[str, Any]]) -> int:
    """Rows on the right (type, id, version) but with another lastUpdated than this tenant's source
    says: the three sources share ids and versions, so a row of one tenant written under another
    would pass the version comparison; its lastUpdated (milliseconds, per source) gives it away."""
    truth = {(e["type"], e["id"]): (str(e["versionId"]), datetime.fromisoformat(e["lastUpdated"].replace("Z", "+00:00")))
             for e in snapshot if not e["deleted"]}
    crossed = 0
    with run.engine.connect() as conn:
        for kind, name in TABLE_FOR_TYPE.items():
            t = MIRRORED_TABLES[name]
            for sid, version, updated in conn.execute(select(t.c.source_id, t.c.source_version, t.c.source_updated_at)
                                                      .where(t.c.tenant_id == tenant.id, t.c.deleted_at.is_(None))):
                expected = truth.get((kind, sid))
                if expected and expected[0] == (version or "") and abs(updated - expected[1]) > timedelta(milliseconds=1):
                    crossed += 1
                    if len(run.notes) < 8:
                        run.notes.append(f"{tenant.id} {kind}/{sid} v{version}: lastUpdated {updated.isoformat()} "
                                         f"is not its source's {expected[1].isoformat()}")
    return crossed


def foreign_rows(run: Run) -> int:
    ours = [t.id for t in run.tenants]
    with run.engine.connect() as conn:
        return sum(conn.execute(select(func.count()).select_from(t).where(t.c.tenant_id.not_in(ours))).scalar_one()
                   for t in MIRRORED_TABLES.values())


# -- the faults --------------------------------------------------------------------------------
def _two_reconciles(run: Run, round_: int, rounds: int) -> None:
    if round_ in (rounds // 4, rounds // 2):  # the same tenant twice at once, of two kinds and of one
        for tenant in run.tenants:
            for kind in ("full", "full", "incremental", "hot"):
                run.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant.id, reconcile=kind)))


def _tokens_expired(run: Run) -> None:
    """The fault bit only if tokens did die under the app: expired answers, and fresh tokens after."""
    for tenant in run.tenants:
        box = tenant.sandbox
        expired, issued = box._expired_answers, len(box.tokens._expiry)
        run.count("expired-token answers", expired)
        run.count("tokens issued", issued)
    if not run.counters.get("expired-token answers"):
        run.violations.append("no request met an expired token: the fault did not bite")


def _overlapping_reconcile(run: Run, round_: int, rounds: int) -> None:
    if round_ % 5 == 1:
        for tenant in run.tenants:
            kind = ("incremental", "full", "hot")[round_ % 3]
            run.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant.id, reconcile=kind)))


POISON_PER_RUN = 12


def _poison(run: Run, round_: int, rounds: int) -> None:
    if round_ % 5 == 0:  # not JSON, not a message of ours, an unknown tenant's change
        for text_ in ("not json", '{"kind": "change"}',
                      encode(ChangeMessage(tenant="nobody", type="Patient", id="PT-1"))):
            run.queues.send(CHANGES_QUEUE, text_)


def _storm(on: bool) -> Hook:
    def hook(run: Run) -> None:
        host_log = [] if on else tail(run.host.log, 100_000).splitlines()
        for index, tenant in enumerate(run.tenants):
            # 30 requests a minute per client, then 429 with Retry-After. The first tenant's source
            # advertises its budget (x-ratelimit-*: the app paces itself); the others' do not, so
            # their clients learn of the limit only from the 429s and must honour each Retry-After.
            # Afterwards a generous limit, advertised by all (the app would keep the storm's limit
            # for ten minutes if none were sent).
            box = tenant.sandbox
            box.config.rate_limit = box.limiter.limit = 30 if on else 3000
            box.config.advertise_limit = index == 0 or not on
            if on:
                box.limiter.admit = _watching(run, tenant.id, box.limiter.admit)  # type: ignore[method-assign]  # issue 26: a seam
                continue
            if "admit" in vars(box.limiter):
                del box.limiter.admit  # the watch ends with the storm: the counts below are final
            refused = run.counters.get(f"429s {tenant.id}", 0)
            # The silent sources must refuse some (the app learns their limit no other way); t0's
            # may refuse none: the app can pace itself by the budget it advertises from the start.
            if index > 0 and not refused:
                run.violations.append(f"{tenant.id}: no request was answered 429: the storm did not bite")
            # Every worker in flight may meet the first 429 (a batch of 16 + 8); after that the
            # Retry-After is shared through the database (a process's copy is ≤ 1 s old), so a
            # second wave is all that may still come before everyone waits.
            if index == 0 and refused > STORM_BOUND:
                run.violations.append(f"{tenant.id}: {refused} requests answered 429 in one Retry-After "
                                      f"window (bound {STORM_BOUND})")
            origin = urlsplit(box.base_url).netloc
            sent = [line for line in host_log if line.startswith(f"{SENT_INSIDE}: {origin} ")]
            if sent:
                run.violations.append(f"{tenant.id}: the app sent {len(sent)} requests after a 429 had reached it, "
                                      f"inside the Retry-After it named (first: {sent[0]})")
    return hook


STORM_BOUND = 2 * 24
HOLD_GRACE = 1.5  # the source's view: requests already in flight when it answered 429


def _watching(run: Run, tenant_id: str, admit: Callable[[str], tuple[bool, int, int]],
              clock: Callable[[], float] = time.monotonic) -> Callable[..., Any]:
    """Count the 429s, and the requests that arrive well inside a Retry-After announced earlier
    (from HOLD_GRACE after the 429 until the time it named). Those are reported, not failed: on a
    loaded machine a request the app sent before the 429 reached it can arrive this late (its
    answer and this process both wait for a CPU). Whether the app sent any after it had the 429
    is the host's log's to say (HoldWatch). ``clock``: monotonic, like the sandbox's limiter."""
    holds: list[tuple[float, float]] = []  # (announced at, until), monotonic like the sandbox's limiter
    lock = threading.Lock()

    def watched(client: str) -> tuple[bool, int, int]:
        now = clock()
        with lock:
            into = max((now - at for at, until in holds if at + HOLD_GRACE <= now < until - 0.05), default=None)
        verdict = admit(client)
        if into is not None:  # sent before the app had the 429, or the host's log says otherwise
            run.count(f"arrived late in a Retry-After {tenant_id}")
            run.peak(f"latest ms into one {tenant_id}", round(into * 1000))
        if not verdict[0]:
            run.count(f"429s {tenant_id}")
            with lock:
                holds.append((now, now + verdict[2]))
        return verdict
    return watched


def _trouble(on: bool) -> Hook:
    def hook(run: Run) -> None:
        box = run.tenants[0].sandbox
        faults = box.config.faults
        if on:  # 10% held for 3 s and dropped unanswered: past the app's 1 s timeout (SYNC_SOURCE_TIMEOUT)
            faults.error_rate, faults.drop_rate, faults.latency_ms, faults.hang_rate, faults.hang_ms = 0.2, 0.1, 300, 0.1, 3000
        else:
            # The reconciles queued during the rounds page through the flaky source first.
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and run.queues.count(RECONCILE_QUEUE):
                run.host.check()
                time.sleep(0.5)
            faults.error_rate, faults.drop_rate, faults.latency_ms, faults.hang_rate = 0.0, 0.0, 0, 0.0
            run.count("requests to the flaky source", box.requests)
            run.count("timed-out requests", box.hangs)
            if not box.hangs:
                run.violations.append("no request hung: the timeouts were not exercised")
    return hook


OUTAGE_ROUNDS = range(8, 12)  # source-trouble: the first tenant's source answers only 5xx
OUTAGE_HOLD = 1.5  # extra seconds per outage round, so the outage outlasts a few breaker cooldowns


def _outage(run: Run, round_: int, rounds: int) -> None:
    """Flaky throughout; in the middle rounds down altogether. While it is down the breaker must
    open and then let one probe through per cooldown: the requests it gets are bounded."""
    box = run.tenants[0].sandbox
    if round_ in (1, 4, 13, 16):  # reconciles page through the flaky source (webhooks alone ask it little)
        run.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=run.tenants[0].id,
                                                                 reconcile="full" if round_ == 1 else "hot")))
    if round_ == OUTAGE_ROUNDS[0]:
        box.config.faults.error_rate, box.config.faults.drop_rate, box.config.faults.latency_ms = 1.0, 0.0, 0
        box.config.faults.hang_rate = 0.0
        run.outage = {"requests": box.requests, "began": time.monotonic(), "states": [],
                      "watch": threading.Event()}
        threading.Thread(target=_watch_breaker, args=(run,), daemon=True).start()
    if round_ in OUTAGE_ROUNDS:
        time.sleep(OUTAGE_HOLD)
    if round_ == OUTAGE_ROUNDS[-1]:
        outage = run.outage
        outage["watch"].set()
        requests = box.requests - outage["requests"]
        seconds = time.monotonic() - outage["began"]
        states = outage["states"]
        opened = sum(1 for a, b in itertools.pairwise(["closed", *states]) if b == "open" and a != "open")
        # K failures open it; what was already in flight (a batch of 16 + 8 more) may still fail;
        # then one probe per cooldown (2 s in the harness) and its token request.
        bound = BREAKER_FAILURES + 24 + 2 * (int(seconds / BREAKER_COOLDOWN) + 1)
        run.count("outage requests", requests)
        run.count("outage bound", bound)
        run.count("breaker opened", opened)
        if requests > bound:
            run.violations.append(f"{requests} requests reached a source that was down for {seconds:.1f} s "
                                  f"(bound {bound})")
        if not opened:
            run.violations.append(f"the breaker never opened in a {seconds:.1f} s outage")
        _trouble(True)(run)


def _watch_breaker(run: Run) -> None:
    states: list[str] = run.outage["states"]
    while not run.outage["watch"].is_set():
        with run.engine.connect() as conn:
            state = conn.execute(text("SELECT state FROM source_health WHERE breaker_key LIKE 't0|%'")).scalar()
        if state and (not states or states[-1] != state):
            states.append(state)
        time.sleep(0.02)


def _many_workers_one_key(run: Run, round_: int, rounds: int) -> None:
    """Change one record many times while many copies of its change message queue up."""
    for tenant in run.tenants:
        for _ in range(5):
            change = tenant.sandbox.data.revise("Appointment", tenant.sandbox.data.first_live("Appointment"))
            run.extra_events += 1
            notifier(tenant).notify([change])
            for _ in range(2):
                run.queues.send(CHANGES_QUEUE, encode(ChangeMessage(tenant=tenant.id, type="Appointment",
                                                                    id=change.id)))


def _queue_down(run: Run, round_: int, rounds: int) -> None:
    """Azurite stopped for 3 s twice while webhooks arrive, then started again with its queues."""
    if round_ not in (rounds // 4, rounds // 2):
        return
    stop(run.azurite["proc"])
    time.sleep(3)
    run.azurite["proc"], _url = start_azurite_queue(run.azurite["log"], port=run.azurite["port"],
                                                    location=run.azurite["folder"])


def _queue_was_down(run: Run) -> None:
    """queue-down bit only if webhooks met it: deliveries answered 503 (or not at all) and re-sent."""
    resent = sum(d["attempts"] - 1 for t in run.tenants for d in notifier(t).deliveries()
                 if d["attempts"] > 1)
    run.count("deliveries re-sent", resent)
    if not resent:
        run.violations.append("no webhook met the queue down: the fault did not bite")


def _webhooks_were_dropped(run: Run) -> None:
    dropped = sum(d["status"] == "dropped" for t in run.tenants for d in notifier(t).deliveries())
    run.count("webhooks dropped", dropped)
    if not dropped:
        run.violations.append("no webhook was dropped: the fault did not bite")


def _sessions_were_killed(run: Run) -> None:
    if not run.counters.get("sessions killed"):
        run.violations.append("no database session was terminated: the fault did not bite")


def _kill_database_sessions(run: Run, round_: int, rounds: int) -> None:
    """Every other round: terminate every PostgreSQL session of the app, mid-statement or not; a full
    reconcile of every tenant is queued first, so that some die in the middle of its batches."""
    if round_ == 0:
        for tenant in run.tenants:
            run.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant.id, reconcile="full")))
    if round_ % 2:
        return
    with run.engine.connect() as conn:
        killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
        conn.rollback()
    run.count("sessions killed", int(killed))


def _replay_old(run: Run, round_: int, rounds: int) -> None:
    """Captured deliveries sent again with their timestamps past the 5-minute tolerance (signed with
    the right secret, as a replayed capture is); and, within it, the same message id again."""
    tenant = run.tenants[2]  # standard-webhooks: id + timestamp + signature
    delivered = [d for d in notifier(tenant).deliveries() if d["status"] == "delivered"][-10:]
    for d in delivered:
        body = json.dumps({"event": f"{d['type'].lower()}.{d['action']}", "type": f"{d['type'].lower()}.{d['action']}",
                           "timestamp": "2026-01-01T00:00:00Z",
                           "data": {"resourceType": d["type"], "id": d["id"], "versionId": str(int(d["version"]) - 1)}},
                          separators=(",", ":")).encode()
        stamp, msg_id = int(time.time()) - 301 - run.rng.randrange(3600), f"msg_replay_{run.rng.randrange(10**9)}"
        headers = {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(stamp),
                   "webhook-signature": standard_webhooks_signature(tenant.secret, msg_id, stamp, body)}
        status = run.send_webhook(tenant, f"{d['type'].lower()}-{d['action']}", body, headers)
        if status == 401:
            run.count("replays refused")
        else:
            run.violations.append(f"a replay past the tolerance was answered {status}")


def _oversized(run: Run, round_: int, rounds: int) -> None:
    """One Backport notification carrying every appointment this round changed at the first tenant
    (each event becomes its own small queue message), and one padded past the 256 KiB limit (413:
    not acknowledged, so the sender keeps it; the reconcile repairs what it carried)."""
    tenant = run.tenants[0]
    recent = [d for d in notifier(tenant).deliveries()
              if d["type"] == "Appointment" and d["action"] == "update"][-40:]
    if not recent:
        return
    events = [{"name": "notification-event", "part": [
        {"name": "event-number", "valueString": str(d["event_number"])},
        {"name": "focus", "valueReference": {"reference": f"Appointment/{d['id']}"}}]} for d in recent]
    for pad in (0, 300 * 1024):
        status = {"resourceType": "Parameters", "meta": {"profile": [BACKPORT_STATUS_PROFILE]}, "parameter": [
            {"name": "subscription", "valueReference": {"reference": f"{tenant.sandbox.base_url}/Subscription/bulk"}},
            {"name": "type", "valueCode": "event-notification"}, *events,
            *([{"name": "padding", "valueString": "x" * pad}] if pad else [])]}
        bundle = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": status}]}
        body = json.dumps(bundle).encode()
        answer = run.send_webhook(tenant, "appointment-update", body, {
            "Content-Type": "application/fhir+json", dict(SCHEMES)[tenant.scheme]: tenant.secret})
        if answer == (413 if pad else 202):
            run.count("oversized refused" if pad else "bundles accepted")
        else:
            run.violations.append(f"a {len(body):,}-byte notification was answered {answer}")


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("none", "no fault: the control"),
    Fault("duplicates", "every webhook sent 2 to 10 times (2 + seed mod 9)",
          notifier=lambda seed: {"repeat": 2 + seed % 9}),
    Fault("shuffled", "webhooks of each round sent in shuffled order from 4 threads",
          notifier={"shuffle": True, "senders": 4}),
    Fault("dropped-webhooks", "1% of webhooks never sent; the next reconcile repairs them",
          notifier={"drop_rate": 0.01}, after=_webhooks_were_dropped),
    Fault("many-workers-one-key", "one record per tenant changed 5 times a round, 2 extra messages each",
          during=_many_workers_one_key),
    Fault("poison", "malformed and foreign messages on the changes queue", during=_poison,
          poison=lambda run: POISON_PER_RUN),
    Fault("rate-limit-storm", "the sources answer 429 with Retry-After beyond 30 requests a minute; two of "
          "the three do not advertise their limit",
          before=_storm(True), after=_storm(False)),
    Fault("source-trouble", "one source: 20% 5xx, 10% dropped connections, 10% timeouts, 300 ms latency; "
          "down for 4 rounds", before=_trouble(True), during=_outage, after=_trouble(False),
          env={"SYNC_SOURCE_TIMEOUT": "1"}),
    Fault("token-expiry", "tokens die after 2 s, mid-reconcile and mid-apply", sandbox={"token_ttl": 2.0},
          during=_overlapping_reconcile, after=_tokens_expired),
    Fault("overlapping-reconciles", "incremental, full and hot reconciles while webhooks flow",
          during=_overlapping_reconcile),
    Fault("two-reconciles-at-once", "two fulls, an incremental and a hot of each tenant queued together",
          during=_two_reconciles),
    Fault("bad-credentials", "one tenant's client secret is wrong; the others keep syncing", bad_tenant=True),
    Fault("replay-after-tolerance", "signed deliveries replayed with timestamps past the 5-minute tolerance",
          during=_replay_old),
    Fault("queue-down", "Azurite stopped for 3 s, twice, while webhooks arrive", during=_queue_down,
          after=_queue_was_down),
    Fault("database-killed", "every PostgreSQL session of the app terminated every other round",
          during=_kill_database_sessions, after=_sessions_were_killed, databases=("postgresql",)),
    Fault("oversized-notification", "notifications of 40 events, and past the 256 KiB limit",
          during=_oversized),
    Fault("crash-after-commit", "the worker dies after committing a change, before deleting its message",
          failpoints="apply.after_commit=crash:0.01"),
    Fault("crash-after-enqueue", "the host dies after enqueuing a webhook, before answering it",
          failpoints="webhook.after_enqueue=crash:0.01"),
)}


# A harness that cannot fail proves nothing: this case breaks the mirror on purpose behind the
# app's back (a row an acknowledged webhook wrote is deleted, another is put back to an older
# version, a third looks like another tenant's copy) and tests/e2e/test_faults.py checks that
# lost, regressions and unexpected say so. Not in the matrix.
def _sabotage(run: Run) -> None:
    tenant = run.tenants[0]
    notifier(tenant).drain(60)
    drain(run)
    table_ = MIRRORED_TABLES[TABLE_FOR_TYPE["Appointment"]]
    written = [d for d in notifier(tenant).deliveries()
               if d["status"] == "delivered" and d["type"] == "Appointment" and d["action"] == "update"]
    victim, older = written[-1]["id"], written[-2]["id"]
    with run.engine.begin() as conn:
        mine = (table_.c.tenant_id == tenant.id)
        conn.execute(table_.delete().where(mine & (table_.c.source_id == victim)))
        at, seq = conn.execute(select(table_.c.source_updated_at, table_.c.source_version_seq).where(
            mine & (table_.c.source_id == older))).one()
        conn.execute(table_.update().where(mine & (table_.c.source_id == older)).values(
            source_updated_at=at - timedelta(days=1), source_version_seq=(seq or 1) - 1))
        # And one row as another tenant's copy would look: same id and version, a later
        # lastUpdated — the version guard keeps it through the reconcile; only its content differs.
        patients = MIRRORED_TABLES[TABLE_FOR_TYPE["Patient"]]
        crossed, at = conn.execute(select(patients.c.source_id, patients.c.source_updated_at).where(
            patients.c.tenant_id == tenant.id, patients.c.deleted_at.is_(None)).limit(1)).one()
        conn.execute(patients.update().where((patients.c.tenant_id == tenant.id) & (patients.c.source_id == crossed))
                     .values(source_updated_at=at + timedelta(days=1)))


SABOTAGE = Fault("sabotage", "the harness's own check: the mirror is damaged behind the app's back", after=_sabotage)


# -- the command -------------------------------------------------------------------------------
def serve_host(port: int) -> None:
    """``python -m bench.faults host``: the app on the local host, as the harness configures it."""
    from devtools.localhost.serve import boot

    booted = boot(load_settings(), port=port, say=lambda _m: None, host_json=HOST_JSON, transport=hold_watch())
    booted.host.submit(_report_loop_lag())
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    booted.stop()


LOOP_LAG_REPORTED = 0.25  # seconds


async def _report_loop_lag() -> None:
    """Print (to the host's log) each time the host's event loop ran a timer late by more than
    LOOP_LAG_REPORTED: everything on that loop (source requests, their answers) waited as long.
    The wall clock, to match the harness's notes of the same moment."""
    while True:
        asked = time.monotonic()
        await asyncio.sleep(0.05)
        late = time.monotonic() - asked - 0.05
        if late > LOOP_LAG_REPORTED:
            print(f"event loop late by {late:.2f} s, until {time.time():.2f}", flush=True)


SENT_INSIDE = "sent inside a Retry-After"


class HoldWatch(httpx.AsyncBaseTransport):
    """In the host process: print (to the host's log) every source request the app sends after a
    429 has reached it and before the Retry-After it named has passed. This is the storm's check
    seen from the app's side, where lateness on the way (a loaded machine delays requests already
    sent, and the 429 on its way back) cannot blur it: it allows no grace at all. The runtime is
    given this transport (around httpx's own); it changes nothing the app sends."""

    def __init__(self, inner: httpx.AsyncBaseTransport, holds: dict[str, list[tuple[float, float]]],
                 lock: threading.Lock) -> None:
        self.inner, self.holds, self.lock = inner, holds, lock  # holds: origin → (429 received, until)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin, now = request.url.netloc.decode(), time.monotonic()
        with self.lock:
            mine = self.holds[origin] = [(got, until) for got, until in self.holds.get(origin, []) if until > now]
            inside = [(got, until) for got, until in mine if got < now < until - 0.05]
        if inside and request.method == "GET":  # the token endpoint is not throttled
            got, until = inside[0]
            print(f"{SENT_INSIDE}: {origin} {request.url.path} {now - got:.3f} s after the 429 reached "
                  f"the app, {until - now:.1f} s before it ended", flush=True)
        response = await self.inner.handle_async_request(request)
        if response.status_code == 429:
            seconds = parse_retry_after(response.headers.get("retry-after"), time.time())
            if seconds:
                received = time.monotonic()
                with self.lock:
                    self.holds.setdefault(origin, []).append((received, received + seconds))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def hold_watch(inner: Callable[[], httpx.AsyncBaseTransport] = httpx.AsyncHTTPTransport
               ) -> Callable[[], HoldWatch]:
    """A transport factory for the runtime (one per event loop), all sharing one record of holds."""
    holds: dict[str, list[tuple[float, float]]] = {}
    lock = threading.Lock()
    return lambda: HoldWatch(inner(), holds, lock)


def matrix_run(fault: Fault, seed: int, events: int, database: str, postgres_url: str) -> Outcome:
    """One run of the matrix; a run the harness could not finish is a failed run (its error is a
    failed check), and the matrix goes on with the next seed."""
    began = time.monotonic()
    try:
        return run_case(fault, seed, events, database, postgres_url, say=lambda m: print(m, flush=True))
    except Exception as exc:
        print(f"  {fault.name} seed {seed}: the run did not finish: {exc}", flush=True)
        return Outcome(fault.name, seed, events, 0, 0, 0, 0, time.monotonic() - began,
                       violations=[f"the run did not finish: {exc}"])


def table(outcomes: list[Outcome]) -> str:
    lines = [("| fault | runs | events | lost | unexpected | regressions | poison | failed checks | crashes | "
             "seconds |"), "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in dict.fromkeys(o.fault for o in outcomes):
        mine = [o for o in outcomes if o.fault == name]
        lines.append(f"| {name} | {len(mine)} | {sum(o.events for o in mine):,} | {sum(o.lost for o in mine)} | "
                     f"{sum(o.unexpected for o in mine)} | {sum(o.regressions for o in mine)} | "
                     f"{sum(o.poison for o in mine)} | {sum(len(o.violations) for o in mine)} | "
                     f"{sum(o.crashes for o in mine)} | "
                     f"{sum(o.seconds for o in mine):,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    host = sub.add_parser("host", help=argparse.SUPPRESS)
    host.add_argument("--port", type=int, required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="the first run's seed; run n uses seed + n")
    parser.add_argument("--events", type=int, default=2000, help="source changes per run")
    parser.add_argument("--fault", nargs="+", choices=sorted(FAULTS), help="default: every fault")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    args = parser.parse_args(argv)
    if args.command == "host":
        serve_host(args.port)
        return 0
    if args.list:
        for fault in FAULTS.values():
            print(f"{fault.name:24} {fault.about}")
        return 0
    faults = [FAULTS[name] for name in (args.fault or FAULTS)]
    outcomes: list[Outcome] = []
    began = time.monotonic()
    for fault in faults:
        if args.database not in fault.databases:
            print(f"{fault.name}: needs {' or '.join(fault.databases)}; skipped on {args.database}")
            continue
        print(f"{fault.name}: {fault.about} ({args.runs} runs × {args.events:,} events, {args.database})", flush=True)
        for n in range(args.runs):
            outcomes.append(matrix_run(fault, args.seed + n, args.events, args.database, args.postgres_url))
    print()
    print(table(outcomes))
    failed = [o for o in outcomes if not o.passed]
    print(f"\n{len(outcomes) - len(failed)} of {len(outcomes)} runs passed in {time.monotonic() - began:,.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
