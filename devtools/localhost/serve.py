"""``serve``: the local host with its tenants, or with the bundled sandbox as a demo tenant.

With no tenants configured, a Halaxy-like sandbox starts on a free loopback port as tenant
``demo``, sending its webhooks to this host; the first full reconcile is enqueued at once and
churn keeps the mirror moving. ``--once`` runs one bounded cycle instead and says whether the
mirror ended equal to the source.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import httpx
from pydantic import SecretStr
from sqlalchemy import Engine, func, select

from devtools.compare import (
    Difference,
    Explained,
    compare,
    explain,
    live_in_snapshot,
    mirrored,
    rest_mirrored,
    rest_truth,
)
from shared.bootstrap import build_runtime, queue_port, queue_service_url, use_runtime
from shared.queues.messages import RECONCILE_QUEUE, ReconcileMessage, encode
from shared.settings import Settings, TenantConfig
from shared.store.engine import safe_url, write_transaction
from shared.store.migrate import migrate
from shared.store.schema import sync_cursors, sync_runs
from shared.store.tenants import purge_tenant_data, sync_tenants

DEMO_TENANT = "demo"
REST_DEMO_TENANT = "demo-cliniko"


@dataclass
class Demo:
    """The sandbox playing tenant ``demo``'s source."""

    sandbox: Any
    tenant: TenantConfig

    def churn(self, creates: int, updates: int, deletes: int) -> int:
        changes = self.sandbox.data.churn(creates=creates, updates=updates, deletes=deletes)
        self.sandbox.notifier.notify(changes)
        return len(changes)

    def difference(self, engine: Engine) -> Difference:
        return compare(mirrored(engine, self.tenant.id), live_in_snapshot(self.sandbox.data.snapshot()))

    def explained(self, engine: Engine) -> Explained:
        """The difference, with what is only waiting for its sync told apart from what is lost."""
        snapshot = self.sandbox.data.snapshot()
        c = sync_cursors.c
        with engine.connect() as conn:
            marks = dict(conn.execute(select(c.resource_type, c.watermark).where(c.tenant_id == self.tenant.id)).all())
        return explain(compare(mirrored(engine, self.tenant.id), live_in_snapshot(snapshot)), snapshot, marks)


@dataclass
class RestDemo:
    """A Cliniko sandbox playing tenant ``demo-cliniko``'s source: the same synthetic practice as
    ``demo``, read through the Cliniko spec into the same tables (no webhooks: Cliniko sends none;
    its incremental runs every minute)."""

    sandbox: Any
    tenant: TenantConfig

    def churn(self, creates: int, updates: int, deletes: int) -> int:
        return len(self.sandbox.churn(creates, updates, deletes))

    def difference(self, engine: Engine) -> Difference:
        return compare(rest_mirrored(engine, self.tenant), rest_truth(self.sandbox.api, self.tenant))


def start_rest_demo(*, counts: tuple[int, int, int, int] = (5, 200, 1000, 400), seed: int = 1) -> RestDemo:
    from devtools.sandbox.rest.apis import build_api
    from devtools.sandbox.rest.server import RestConfig, RestSandbox
    from devtools.synthetic import SyntheticCounts

    api_key = secrets.token_urlsafe(24)
    api = build_api("cliniko", seed=seed, counts=SyntheticCounts(*counts), anchor=datetime.now(UTC), client_id=api_key)
    box = RestSandbox(api, RestConfig(rate_limit=api.default_rate_limit)).start()
    tenant = TenantConfig(id=REST_DEMO_TENANT, name="Demo practice on Cliniko (sandbox)", timezone="Australia/Sydney",
                          source="rest", spec="cliniko", base_url=f"{box.base_url}/v1", username=SecretStr(api_key),
                          schedule="0 */1 * * * *")
    return RestDemo(box, tenant)


def start_demo(webhook_base: str, *, counts: tuple[int, int, int, int] = (5, 200, 1000, 400), seed: int = 1) -> Demo:
    from devtools.sandbox.data import SandboxData
    from devtools.sandbox.notify import WebhookConfig
    from devtools.sandbox.server import Sandbox, SandboxConfig
    from devtools.synthetic import SyntheticCounts

    client_secret, webhook_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    webhook = WebhookConfig(url=f"{webhook_base}/api/webhooks/{DEMO_TENANT}/{{event}}", scheme="halaxy",
                            secret=webhook_secret, header="X-Webhook-Secret")
    data = SandboxData(SyntheticCounts(*counts), seed=seed, anchor=datetime.now(UTC))
    box = Sandbox(data, SandboxConfig(client_secret=client_secret, webhook=webhook)).start()
    tenant = TenantConfig(id=DEMO_TENANT, name="Demo practice (sandbox)", timezone="Australia/Sydney",
                          fhir_base_url=box.base_url, client_id="sandbox-client",
                          client_secret=SecretStr(client_secret), webhook_scheme="halaxy",
                          webhook_secrets=[SecretStr(webhook_secret)], webhook_header="X-Webhook-Secret")
    return Demo(box, tenant)


SECRET_FIELDS = ("client_secret", "username", "password", "api_key")


def with_tenants(settings: Settings, tenants: list[TenantConfig]) -> Settings:
    payload = [t.model_dump(mode="json", exclude_none=True)
               | {name: t.credential(name) for name in SECRET_FIELDS if getattr(t, name) is not None}
               | {"webhook_secrets": [s.get_secret_value() for s in t.webhook_secrets]} for t in tenants]
    return settings.model_copy(update={"tenants_json": SecretStr(json.dumps(payload)), "tenants_file": None})


def enqueue_reconcile(queues: Any, tenant_id: str, kind: str) -> None:
    queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant_id, reconcile=kind)))


def wait_for_run(engine: Engine, tenant_id: str, kind: str, after: datetime, timeout: float) -> str | None:
    """The status of the first run of ``kind`` started after ``after`` once it ended, or None."""
    deadline = time.monotonic() + timeout
    c = sync_runs.c
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            row = conn.execute(select(c.status).where(c.tenant_id == tenant_id, c.kind == kind, c.started_at >= after)
                               .order_by(c.started_at).limit(1)).first()
        if row is not None and row.status not in ("queued", "running"):
            return str(row.status)
        time.sleep(0.1)
    return None


@dataclass
class Booted:
    host: Any
    runtime: Any
    demo: Demo | None
    tenants: list[TenantConfig]
    rest_demo: RestDemo | None = None

    def stop(self) -> None:
        self.host.stop()
        with contextlib.suppress(Exception):  # best effort on the way out
            self.runtime.metrics.flush(self.runtime.engine)  # the last second of counts
        if self.demo is not None:
            self.demo.sandbox.stop()
        if self.rest_demo is not None:
            self.rest_demo.sandbox.stop()
        use_runtime(None)
        self.runtime.engine.dispose()


def boot(settings: Settings, *, port: int, say: Callable[[str], None] = print,
         demo_counts: tuple[int, int, int, int] = (5, 200, 1000, 400), queues: Any = None,
         host_json: dict[str, Any] | None = None,
         transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
         clock: Callable[[], datetime] | None = None) -> Booted:
    """Migrate, start the sandbox when no tenant is configured, install the runtime, start the host."""
    from devtools.localhost.host import LocalHost
    from function_app import app

    tenants = settings.load_tenants()
    queues = queues if queues is not None else queue_port(settings)
    host = LocalHost(app, settings, queues, port=port, host_json=host_json)  # binds now: the sandbox needs its URL
    demo = rest_demo = None
    if not tenants:
        demo = start_demo(host.url, counts=demo_counts)
        rest_demo = start_rest_demo(counts=demo_counts)
        tenants = [demo.tenant, rest_demo.tenant]
        settings = with_tenants(settings, tenants)
    migrate(settings, tenants=tenants)  # the tables the tenants' specs declare, too
    runtime = build_runtime(settings, queues=queues, transport=transport, clock=clock)
    use_runtime(runtime)
    with write_transaction(runtime.engine) as conn:
        sync_tenants(conn, tenants)
        for tenant_id in (DEMO_TENANT, REST_DEMO_TENANT) if demo is not None else ():
            if removed := purge_tenant_data(conn, tenant_id):
                say(f"demo: cleared {removed:,} rows an earlier demo left for {tenant_id} "
                    "(its sandbox source is new each start)")
    host.start()
    return Booted(host, runtime, demo, tenants, rest_demo)


def banner(booted: Booted, settings: Settings) -> list[str]:
    """What a person starting the host needs: where to look, what to send, whether a key is needed."""
    host, demo = booted.host, booted.demo
    api = f"{host.url}/api"
    where = ("Azurite" if settings.azure_webjobs_storage else
             "Azure Storage (identity)" if queue_service_url(settings) else "memory")
    key = settings.local_function_key.get_secret_value() if settings.local_function_key else ""
    first = booted.tenants[0].id if booted.tenants else "{tenant}"
    lines = [(f"local host on {host.url}: {len(host.functions)} functions, queues in {where}, "
             f"database {safe_url(settings.database_url)}"),
             f"  status page   {api}/status",
             f"  health        {api}/health",
             f"  practitioners {api}/tenants/{first}/practitioners"]
    if demo is not None:
        practitioner = demo.sandbox.data.first_live("Practitioner")
        lines.append(f"  dashboard     {api}/tenants/{DEMO_TENANT}/practitioners/{practitioner}/dashboard"
                     "  (after the first sync)")
    else:
        lines.append(f"  dashboard     {api}/tenants/{first}/practitioners/{{id from the list above}}/dashboard")
    lines += [f"  OpenAPI       {api}/openapi.json",
              f"  webhooks      {api}/webhooks/{{tenant}}/{{event}}  (each tenant's own secret; no function key)",
              f"  host status   {host.url}/admin/host/status",
              "  function key  " + ("needed for the status page, dashboards and sync routes: header x-functions-key "
                                    "or ?code= (LOCAL_FUNCTION_KEY)" if key else
                                    "none needed here (LOCAL_FUNCTION_KEY is empty; Azure asks for one)")]
    if demo is not None:
        lines.append(f"  demo tenant   {DEMO_TENANT}: a Halaxy-like sandbox at {demo.sandbox.base_url}, webhooks to "
                     "this host")
    if booted.rest_demo is not None:
        rest = booted.rest_demo
        first_practitioner = min(r.id for r in rest.sandbox.api.store.live("practitioners"))
        lines.append(f"  REST tenant   {REST_DEMO_TENANT}: the same practice on a Cliniko sandbox at "
                     f"{rest.sandbox.base_url}/v1 (a REST spec, no FHIR); its dashboard: "
                     f"{api}/tenants/{REST_DEMO_TENANT}/practitioners/{first_practitioner}/dashboard")
    return lines


def serve(settings: Settings, *, port: int, once: bool, say: Callable[[str], None] = print) -> int:
    booted = boot(settings, port=port, say=say)
    host, engine, queues, demo = booted.host, booted.runtime.engine, booted.runtime.queues, booted.demo
    for line in banner(booted, settings):
        say(line)
    try:
        if once:
            if demo is None:
                say("error: --once needs the demo tenant (run without a tenants file)")
                return 2
            return run_once(host, engine, queues, demo, say, rest_demo=booted.rest_demo)
        summary = MinuteSummary(host, engine)
        if demo is not None:
            began = time.monotonic()
            started = datetime.now(UTC) - timedelta(seconds=1)
            enqueue_reconcile(queues, DEMO_TENANT, "full")
            if booted.rest_demo is not None:
                enqueue_reconcile(queues, REST_DEMO_TENANT, "full")
            status = wait_for_run(engine, DEMO_TENANT, "full", started, timeout=600)
            rest = wait_for_run(engine, REST_DEMO_TENANT, "full", started, timeout=600) if booted.rest_demo else None
            say(f"first full reconcile: {status}, {len(mirrored(engine, DEMO_TENANT)):,} rows in "
                f"{time.monotonic() - began:.1f} s" + (f"; {REST_DEMO_TENANT}: {rest}" if booted.rest_demo else "")
                + "; the sandboxes now change a few records every 5 s "
                "(one summary line a minute; SYNC_LOG_LEVEL=DEBUG shows each event; Ctrl-C stops)")
            keep_churning(demo, engine, summary, say, 5.0, booted.rest_demo)
        else:
            say(f"serving {len(booted.tenants)} tenant(s); timers fan out reconciles on their schedules "
                "(one summary line a minute; Ctrl-C stops)")
            while True:
                time.sleep(60)
                say(summary.line())
    except KeyboardInterrupt as stop:
        return stopped(stop, once, say)
    finally:
        booted.stop()


class Interrupted(KeyboardInterrupt):
    """A stop signal other than Ctrl-C (SIGTERM), raised like KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def stopped(stop: KeyboardInterrupt, once: bool, say: Callable[[str], None]) -> int:
    """The exit code of a host stopped by a signal: 0 for a served host (stopping on request is
    its job); for ``--once`` the shell's 128 + the signal's number (130 Ctrl-C, 143 SIGTERM),
    since its cycle did not finish."""
    if not once:
        say("stopping")
        return 0
    code = 128 + getattr(stop, "signum", signal.SIGINT)
    say(f"stopping: interrupted before the cycle finished (exit {code})")
    return code


class MinuteSummary:
    """One line for what the host did since the last line: changes applied, runs ended."""

    def __init__(self, host: Any, engine: Engine, now: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.host, self.engine, self.now = host, engine, now
        self.since, self.last = now(), host.status()["queues"]

    def line(self) -> str:
        queues, at = self.host.status()["queues"], self.now()
        changes, before = queues["changes"], self.last["changes"]
        c = sync_runs.c
        with self.engine.connect() as conn:
            ended: dict[str, int] = dict(conn.execute(select(c.status, func.count()).where(c.finished_at >= self.since)
                                      .group_by(c.status)).all())
        self.since, self.last = at, queues
        return (f"last minute: changes applied {changes['handled'] - before['handled']:,} "
                f"({changes['depth']:,} queued), poisoned {changes['poisoned'] - before['poisoned']}, "
                f"reconciles completed {ended.get('completed', 0)}, failed {ended.get('failed', 0)}")


def keep_churning(demo: Demo, engine: Engine, summary: MinuteSummary, say: Callable[[str], None],
                  every: float, rest_demo: RestDemo | None = None) -> NoReturn:
    rounds = 0
    while True:
        time.sleep(every)
        rounds += 1
        if rounds % max(1, int(60 / every)) == 0:  # before this round's changes: their webhooks are on the way
            say(f"{summary.line()}; mirror {demo.explained(engine).summary(3)}")
        demo.churn(creates=1, updates=3, deletes=0)
        if rest_demo is not None:
            rest_demo.churn(creates=1, updates=2, deletes=0)


def run_once(host: Any, engine: Engine, queues: Any, demo: Demo, say: Callable[[str], None],
             timeout: float = 300, rest_demo: RestDemo | None = None) -> int:
    """Full reconcile → churn burst with webhooks → drain → full reconcile; 0 only if mirror == source
    (for the REST demo tenant too, when there is one)."""
    began = time.monotonic()
    started = datetime.now(UTC) - timedelta(seconds=1)
    enqueue_reconcile(queues, DEMO_TENANT, "full")
    if rest_demo is not None:
        enqueue_reconcile(queues, REST_DEMO_TENANT, "full")
    status = wait_for_run(engine, DEMO_TENANT, "full", started, timeout)
    rest_status = wait_for_run(engine, REST_DEMO_TENANT, "full", started, timeout) if rest_demo else "completed"
    say(f"1/4 full reconcile: {status} ({len(mirrored(engine, DEMO_TENANT)):,} live rows)"
        + (f"; {REST_DEMO_TENANT}: {rest_status}, mirror {rest_demo.difference(engine).summary()}" if rest_demo else ""))
    if status != "completed" or rest_status != "completed":
        return 1
    changes = demo.churn(creates=20, updates=40, deletes=10)
    if rest_demo is not None:
        rest_demo.churn(creates=10, updates=20, deletes=5)
    delivered = demo.sandbox.notifier.drain(timeout=60)
    idle = host.wait_idle(timeout=60)
    log_ = demo.sandbox.notifier.deliveries()
    announced = {(d["type"], d["id"]) for d in log_}
    explained = demo.explained(engine)
    missed = [k for k in explained.difference.lost if (k[0], k[1]) in announced]
    say(f"2/4 churn: {changes} changes, {len(log_)} webhooks "
        f"({sum(d['status'] == 'delivered' for d in log_)} delivered), queues drained: {delivered and idle}")
    say(f"3/4 after webhooks: mirror {explained.summary()}; announced but not applied: {len(missed)} "
        "(Halaxy sends no webhook for Patient deletes, referrals or Practitioner changes: the reconcile finds those)")
    second = datetime.now(UTC)
    enqueue_reconcile(queues, DEMO_TENANT, "full")
    if rest_demo is not None:
        enqueue_reconcile(queues, REST_DEMO_TENANT, "full")
    status = wait_for_run(engine, DEMO_TENANT, "full", second, timeout)
    rest_status = wait_for_run(engine, REST_DEMO_TENANT, "full", second, timeout) if rest_demo else "completed"
    host.wait_idle(timeout=60)
    final = demo.difference(engine)
    rest_final = rest_demo.difference(engine) if rest_demo else None
    say(f"4/4 full reconcile: {status}; mirror vs /_sandbox/snapshot: {final.summary()}"
        + (f"; {REST_DEMO_TENANT}: {rest_status}, mirror vs its sandbox: {rest_final.summary()}" if rest_final else ""))
    ok = (status == "completed" and final.equal and not missed and delivered and idle
          and rest_status == "completed" and (rest_final is None or rest_final.equal))
    say(f"{'OK' if ok else 'FAILED'}: mirror {'equals' if final.equal else 'differs from'} the source "
        f"({time.monotonic() - began:.1f} s)")
    sys.stdout.flush()
    return 0 if ok else 1
