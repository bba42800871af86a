"""What a run is made of: the app's host process, a fresh database with the regression log, the
tenants and their sandboxes, a run's state, a fault, an outcome."""
from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text

from bench.common import postgres_database, wait_for
from devtools.sandbox.notify import Notifier
from shared.failpoints import CRASH_EXIT_CODE
from shared.queues.azure import AzureQueues
from shared.settings import TenantConfig, load_settings, parse_tenants
from shared.store.engine import create_store_engine
from shared.store.migrate import migrate
from shared.store.schema import MIRRORED_TABLES

ROOT = Path(__file__).resolve().parents[2]
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


def mirrored_tables(tenants: list[TenantConfig]) -> list[str]:
    """The built-in mirrored tables and those the REST tenants' specs declare."""
    declared = {entity.table_name for t in tenants if not t.is_fhir for entity in t.rest_spec().entities}
    return [*MIRRORED_TABLES, *sorted(declared - set(MIRRORED_TABLES))]


def install_regression_log(engine: Engine, tables: list[str]) -> None:
    with engine.begin() as conn:
        conn.execute(text(_REGRESSION_LOG))
        for table in tables:
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
def fresh_database(kind: str, folder: Path, name: str, postgres_url: str,
                   tenants: list[TenantConfig]) -> Iterator[str]:
    """A migrated, empty database (the REST tenants' declared tables too) with the regression
    log on every mirrored table; its URL."""
    with contextlib.ExitStack() as stack:
        url = (f"sqlite:///{folder / 'mirror.db'}" if kind == "sqlite"
               else stack.enter_context(postgres_database(postgres_url, name)))
        settings = load_settings(database_url=url)
        migrate(settings, tenants=tenants, report=lambda line: None)
        engine = create_store_engine(settings)
        install_regression_log(engine, mirrored_tables(tenants))
        engine.dispose()
        yield url


# The REST tenants of the faults that have them (Fault.rest): their API, its records, and the
# page size their tenant asks for (PPB's small pages make a full listing 20 requests, so the
# rate-limit storm bites; HIE's registry is unpaged: one request a listing).
REST_APIS = (("hie-facilities", 1000, None), ("ppb-premises", 1000, 50))


@dataclass
class Tenant:
    id: str
    sandbox: Any  # Sandbox (FHIR) or RestSandbox
    secret: str
    scheme: str
    client_secret: str = "sandbox-secret"
    syncs: bool = True  # False: its credentials are wrong on purpose
    api: str = ""  # a REST tenant's API (its bundled spec); "" for the FHIR tenants
    page_size: int | None = None

    @property
    def rest(self) -> bool:
        return bool(self.api)

    def config(self) -> dict[str, Any]:
        if self.rest:
            return {"id": self.id, "name": self.id, "timezone": "Africa/Nairobi", "source": "rest", "spec": self.api,
                    "base_url": self.sandbox.base_url, **rest_credentials(self.api, self.sandbox.base_url,
                                                                          self.client_secret),
                    "webhook_secrets": [self.secret], **({"page_size": self.page_size} if self.page_size else {}),
                    "schedule": NEVER, "full_schedule": NEVER}
        header = dict(SCHEMES)[self.scheme]
        return {"id": self.id, "name": self.id, "timezone": "Australia/Sydney", "fhir_base_url": self.sandbox.base_url,
                "client_id": "sandbox-client", "client_secret": self.client_secret, "webhook_scheme": self.scheme,
                "webhook_secrets": [self.secret], **({"webhook_header": header} if header else {}),
                "schedule": NEVER, "hot_schedule": NEVER, "full_schedule": NEVER}

    def settings(self) -> TenantConfig:
        return parse_tenants(json.dumps([self.config()]), source=f"the fault matrix's tenant {self.id}")[0]

    def churn(self, creates: int, updates: int, deletes: int) -> int:
        """Change records at the source; its webhooks go out on the sandbox's notifier."""
        if self.rest:
            return len(self.sandbox.churn(creates, updates, deletes))
        changes = self.sandbox.data.churn(creates=creates, updates=updates, deletes=deletes)
        notifier(self).notify(changes)
        return len(changes)


def rest_credentials(api: str, base_url: str, secret: str) -> dict[str, str]:
    """As samples/tenants.NAME.json has them for that sandbox."""
    if api == "hie-facilities":
        return {"token_url": f"{base_url}/oauth2/token", "client_id": "sandbox-client", "client_secret": secret}
    if api == "ppb-premises":
        return {"username": "sandbox-client", "password": secret}
    raise ValueError(f"the fault matrix has no REST tenant for {api!r}")


def notifier(tenant: Tenant) -> Notifier:
    """The tenant's sandbox notifier: every tenant of the matrix has webhooks configured."""
    sender = tenant.sandbox.sender if tenant.rest else tenant.sandbox.notifier
    assert sender is not None
    return sender


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
    rest: bool = False  # two REST tenants besides the three FHIR ones (REST_APIS)
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
