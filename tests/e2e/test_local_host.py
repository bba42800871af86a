"""End to end through the local host: function_app.py served on loopback, the sandbox as the
source over real HTTP, queues in memory or Azurite, SQLite and PostgreSQL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from devtools.compare import compare, live_in_snapshot, mirrored
from devtools.localhost.serve import DEMO_TENANT, Booted, boot, enqueue_reconcile, run_once, wait_for_run
from devtools.sandbox.data import SandboxData
from devtools.sandbox.server import Sandbox, SandboxConfig
from devtools.synthetic import SyntheticCounts
from shared.bootstrap import azurite_connection_string
from shared.settings import load_settings
from shared.store.schema import sync_runs

ROOT = Path(__file__).resolve().parents[2]
SMALL = (3, 60, 300, 60)
NEVER = "0 0 0 1 1 *"  # the fan-out timer: tests that count runs and messages enqueue their own
quiet = lambda line: None  # the e2e tests read figures, not prose


@pytest.fixture
def booted(database_url: str) -> Iterator[Booted]:
    running = boot(load_settings(database_url=database_url, fanout_schedule=NEVER), port=0, say=quiet,
                   demo_counts=SMALL)
    yield running
    running.stop()


def full_runs(booted: Booted) -> list[tuple[str, str, int]]:
    c = sync_runs.c
    with booted.runtime.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(c.id, c.status, c.processed).where(
            c.tenant_id == DEMO_TENANT, c.kind == "full"))]


def test_webhooks_in_rows_out_and_the_mirror_equals_the_source(booted: Booted) -> None:
    assert booted.demo is not None
    result = run_once(booted.host, booted.runtime.engine, booted.runtime.queues, booted.demo, quiet)
    deliveries = booted.demo.sandbox.notifier.deliveries()
    stats = booted.host.status()["queues"]
    assert result == 0
    assert len(deliveries) > 40 and all(d["status"] == "delivered" for d in deliveries)
    assert stats["changes"]["handled"] == len(deliveries) and stats["changes"]["poisoned"] == 0
    # A forged delivery through the same door is refused and enqueues nothing.
    forged = httpx.post(f"{booted.host.url}/api/webhooks/{DEMO_TENANT}/appointment-update", content=b"{}",
                        headers={"Content-Type": "application/fhir+json", "X-Webhook-Secret": "guess"})
    assert (forged.status_code, forged.json()) == (401, {"error": "bad-secret"})
    assert booted.host.status()["queues"]["changes"]["depth"] == 0


def test_two_reconciles_of_one_tenant_started_at_once_one_runs(booted: Booted) -> None:
    assert booted.demo is not None
    booted.demo.sandbox.config.faults.latency_ms = 30  # long enough for the two to overlap
    started = datetime.now(UTC)
    enqueue_reconcile(booted.runtime.queues, DEMO_TENANT, "full")
    enqueue_reconcile(booted.runtime.queues, DEMO_TENANT, "full")
    assert wait_for_run(booted.runtime.engine, DEMO_TENANT, "full", started, timeout=120) == "completed"
    assert booted.host.wait_idle(timeout=60)
    ((_run, status, _processed),) = full_runs(booted)  # one run row: the second was refused
    assert status == "completed"
    assert booted.host.status()["queues"]["reconcile"]["handled"] == 2  # both messages acknowledged


def test_a_continuation_chain_completes_a_tenant_larger_than_one_budget(database_url: str) -> None:
    running = boot(load_settings(database_url=database_url, reconcile_time_budget=0.05, fanout_schedule=NEVER),
                   port=0, say=quiet, demo_counts=SMALL)
    try:
        assert running.demo is not None
        running.demo.sandbox.config.faults.latency_ms = 20
        started = datetime.now(UTC)
        enqueue_reconcile(running.runtime.queues, DEMO_TENANT, "full")
        assert wait_for_run(running.runtime.engine, DEMO_TENANT, "full", started, timeout=120) == "completed"
        assert running.host.wait_idle(timeout=60)
        assert running.host.status()["queues"]["reconcile"]["handled"] >= 4  # the first + continuations
        assert len(full_runs(running)) == 1
        assert running.demo.difference(running.runtime.engine).equal
    finally:
        running.stop()


@pytest.mark.azurite
def test_queue_triggers_from_azurite(sqlite_url: str, azurite_queue_url: str) -> None:
    settings = load_settings(database_url=sqlite_url, AzureWebJobsStorage=azurite_connection_string(azurite_queue_url))
    running = boot(settings, port=0, say=quiet, demo_counts=SMALL)
    try:
        assert type(running.runtime.queues).__name__ == "AzureQueues"
        assert running.demo is not None
        assert run_once(running.host, running.runtime.engine, running.runtime.queues, running.demo, quiet) == 0
    finally:
        running.stop()


def test_serve_once_from_the_command_line_exits_zero_when_mirror_equals_source(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "shared.cli", "--database-url", f"sqlite:///{tmp_path}/m.db",
                           "serve", "--port", "0", "--once"], cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: mirror equals the source" in done.stdout
    assert "lost 0 [], unexpected 0 []" in done.stdout


def test_a_reconcile_killed_mid_run_resumes_from_its_checkpoint_without_loss(database_url: str,
                                                                             tmp_path: Path) -> None:
    data = SandboxData(SyntheticCounts(3, 300, 3000, 300), seed=9, anchor=datetime.now(UTC))
    box = Sandbox(data, SandboxConfig(rate_limit=0)).start()
    box.config.faults.latency_ms = 40
    never = "0 0 0 1 1 *"
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps([{"id": "kill", "name": "Kill", "fhir_base_url": box.base_url,
                                    "client_id": "sandbox-client", "client_secret": "sandbox-secret",
                                    "schedule": never, "hot_schedule": never, "full_schedule": "*/2 * * * * *"}]))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SYNC_DATABASE_URL": database_url,
           "SYNC_TENANTS_FILE": str(tenants), "SYNC_FANOUT_SCHEDULE": "* * * * * *", "SYNC_RUN_STALE_AFTER": "2"}
    engine = create_engine(database_url)
    c = sync_runs.c
    full = select(c.id, c.status, c.processed).where(c.tenant_id == "kill", c.kind == "full")

    def serve(log: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "shared.cli", "serve", "--port", "0"], cwd=ROOT, env=env,
                                stdout=open(tmp_path / log, "wb"), stderr=subprocess.STDOUT)

    first = serve("first.log")
    try:
        deadline = time.monotonic() + 90
        killed = None
        while time.monotonic() < deadline and killed is None:
            with engine.connect() as conn:
                rows = conn.execute(full).all()
            if rows and rows[0].status == "running" and rows[0].processed >= 500:
                first.send_signal(signal.SIGKILL)  # mid-run, between or during pages
                first.wait(timeout=10)
                killed = rows[0]
            time.sleep(0.05)
        assert killed is not None, (tmp_path / "first.log").read_text()[-2000:]
        second = serve("second.log")
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    row = conn.execute(full.where(c.id == killed.id)).one()
                if row.status == "completed":
                    break
                time.sleep(0.2)
            assert row.status == "completed", (tmp_path / "second.log").read_text()[-2000:]
        finally:
            second.send_signal(signal.SIGTERM)  # stops like Ctrl-C
            try:
                second.wait(timeout=30)
            except subprocess.TimeoutExpired:
                second.kill()  # never leave it running against the next tests' database
                raise
        truth = live_in_snapshot(box.data.snapshot())
        assert compare(mirrored(engine, "kill"), truth).equal
        # The same run finished, resumed from its checkpoint: every resource counted exactly once.
        assert killed.processed < row.processed == len(truth)
    finally:
        if first.poll() is None:
            first.kill()
        engine.dispose()
        box.stop()


def test_the_host_answers_bad_http_with_a_4xx_and_reports_its_state(sqlite_url: str) -> None:
    import http.client

    running = boot(load_settings(database_url=sqlite_url), port=0, say=quiet, demo_counts=SMALL)
    try:
        def raw(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> int:
            conn = http.client.HTTPConnection("127.0.0.1", running.host.port, timeout=10)
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(body or None)
            status = conn.getresponse().status
            conn.close()
            return status

        hook = f"/api/webhooks/{DEMO_TENANT}/appointment-update"
        assert raw("POST", hook, {"Content-Length": str(64 * 1024 * 1024)}) == 413  # refused unread
        assert raw("POST", hook, {"Transfer-Encoding": "chunked"}, b"0\r\n\r\n") == 411
        assert raw("POST", hook, {"Content-Length": "abc"}) == 400
        assert raw("GET", hook, {}) == 405
        assert raw("TRACE", hook, {}) == raw("OPTIONS", "/api/health", {}) == 405  # not http.server's 501
        assert raw("POST", "/api/unknown", {"Content-Length": "0"}) == 404
        assert raw("GET", "/elsewhere", {}) == 404
        status = httpx.get(f"{running.host.url}/admin/host/status").json()
        assert status["functions"] == {"apply_change_message": "queueTrigger", "receive_webhook": "httpTrigger",
                                       "reconcile_fan_out": "timerTrigger", "reconcile_step": "queueTrigger",
                                       "practitioner_dashboard": "httpTrigger", "health": "httpTrigger",
                                       "practitioners": "httpTrigger",
                                       **dict.fromkeys(("trigger_sync", "sync_run", "sync_runs", "cancel_sync_run",
                                                        "cleanup_sync_runs", "redrive_poison", "sync_status",
                                                        "replay_sync", "status_page", "openapi"), "httpTrigger")}
        assert set(status["queues"]) == {"changes", "reconcile"} and status["timers"]["reconcile_fan_out"]["next"]
    finally:
        running.stop()


def test_failing_tenants_never_delay_a_healthy_one(database_url: str) -> None:
    """One host, three tenants: wrong credentials, a source answering only 5xx, and a healthy one
    due every 2 s. The healthy tenant keeps syncing on time; each failure lands on its own runs."""
    from pydantic import SecretStr

    from devtools.localhost.serve import with_tenants
    from shared.settings import TenantConfig
    from shared.store.schema import source_health

    good = Sandbox(SandboxData(SyntheticCounts(2, 40, 200, 40), seed=4, anchor=datetime.now(UTC)),
                   SandboxConfig(rate_limit=0)).start()
    down = Sandbox(SandboxData(SyntheticCounts(2, 40, 200, 40), seed=5, anchor=datetime.now(UTC)),
                   SandboxConfig(rate_limit=0)).start()
    down.config.faults.error_rate = 1.0
    never, every_2s = "0 0 0 1 1 *", "*/2 * * * * *"

    def tenant(tid: str, url: str, secret: str) -> TenantConfig:
        return TenantConfig(id=tid, name=tid, fhir_base_url=url, client_id="sandbox-client",
                            client_secret=SecretStr(secret), schedule=every_2s, hot_schedule=never, full_schedule=never)

    tenants = [tenant("healthy", good.base_url, "sandbox-secret"), tenant("badcreds", good.base_url, "wrong"),
               tenant("down", down.base_url, "sandbox-secret")]
    settings = with_tenants(load_settings(database_url=database_url, fanout_schedule="* * * * * *"), tenants)
    running = boot(settings, port=0, say=quiet)
    c = sync_runs.c
    try:
        # Wait for the event, not for a time: five completed runs of the healthy tenant while the
        # other two fail on the same timers (bounded: due every 2 s, so ~10 s on an idle machine).
        deadline = time.monotonic() + 120
        while True:
            with running.runtime.engine.connect() as conn:
                runs = conn.execute(select(c.tenant_id, c.status, c.started_at, c.finished_at, c.error)
                                    .order_by(c.started_at)).all()
                breakers = {r.breaker_key: r.state for r in conn.execute(select(source_health))}
            by_tenant: dict[str, list[Any]] = {t.id: [r for r in runs if r.tenant_id == t.id] for t in tenants}
            healthy = [r for r in by_tenant["healthy"] if r.status == "completed"]
            failures = {t: [r.finished_at for r in by_tenant[t] if r.status == "failed"] for t in ("badcreds", "down")}
            both_failed = max(min(f) for f in failures.values()) if all(failures.values()) else None
            after = sum(both_failed is not None and r.started_at > both_failed for r in healthy)
            if (len(healthy) >= 5 and after >= 2) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        # The failing tenants hold no timer back: the healthy one kept completing runs after both
        # of them had failed.
        assert len(healthy) >= 5 and after >= 2, (by_tenant, both_failed)
        assert all(r.status != "failed" for r in by_tenant["healthy"])
        # Each failure is recorded on its own tenant's runs, with what went wrong.
        assert by_tenant["badcreds"] and all(r.status in ("failed", "running") for r in by_tenant["badcreds"])
        assert any("token refused" in (r.error or "") for r in by_tenant["badcreds"]), by_tenant["badcreds"]
        assert by_tenant["down"] and all(r.status in ("failed", "running") for r in by_tenant["down"])
        assert any("tenant down" in (r.error or "") for r in by_tenant["down"]), by_tenant["down"]
        assert any(key.startswith("down") and state == "open" for key, state in breakers.items()), breakers
        assert not any(key.startswith("healthy") and state == "open" for key, state in breakers.items())
        # And the healthy mirror is the healthy source.
        assert compare(mirrored(running.runtime.engine, "healthy"), live_in_snapshot(good.data.snapshot())).equal
    finally:
        running.stop()
        good.stop()
        down.stop()


def test_dashboard_and_health_over_http_after_a_full_reconcile(booted: Booted) -> None:
    from shared.store.schema import practitioners

    assert booted.demo is not None
    base = f"{booted.host.url}/api"
    assert httpx.get(f"{base}/health").json()["tenants"][0]["reason"] == "never synced yet"
    started = datetime.now(UTC)
    enqueue_reconcile(booted.runtime.queues, DEMO_TENANT, "full")
    assert wait_for_run(booted.runtime.engine, DEMO_TENANT, "full", started, timeout=120) == "completed"
    health = httpx.get(f"{base}/health")
    assert health.status_code == 200 and health.json()["tenants"][0]["status"] == "on_time"
    with booted.runtime.engine.connect() as conn:
        practitioner = conn.execute(select(practitioners.c.source_id).where(
            practitioners.c.tenant_id == DEMO_TENANT).limit(1)).scalar()
    today = datetime.now(UTC).date().isoformat()
    board = httpx.get(f"{base}/tenants/{DEMO_TENANT}/practitioners/{practitioner}/dashboard", params={"date": today})
    assert board.status_code == 200 and board.json()["practitioner"]["id"] == practitioner
    assert board.json()["sync"]["status"] == "on_time"
    missing = httpx.get(f"{base}/tenants/{DEMO_TENANT}/practitioners/PR-NOPE/dashboard")
    bad = httpx.get(f"{base}/tenants/{DEMO_TENANT}/practitioners/{practitioner}/dashboard", params={"date": "x"})
    assert (missing.status_code, bad.status_code) == (404, 400)
    # Care plans: a session of a client whose referral is assigned to the session's practitioner
    # shows that referral's limit and at least its prior sessions plus this one.
    from shared.store.schema import referrals, sessions

    r, s = referrals.c, sessions.c
    with booted.runtime.engine.connect() as conn:
        mirrored = conn.execute(select(func.count()).select_from(referrals).where(r.tenant_id == DEMO_TENANT)).scalar()
        plan, visit = next(
            (plan, visit) for plan in conn.execute(select(referrals).where(
                r.tenant_id == DEMO_TENANT, r.practitioner_id.is_not(None), r.session_limit.is_not(None)))
            for visit in conn.execute(select(s.source_id, s.start_at).where(
                s.tenant_id == DEMO_TENANT, s.client_id == plan.client_id, s.practitioner_id == plan.practitioner_id,
                s.status.in_(("booked", "attended"))))
            if plan.starts_on <= visit.start_at.astimezone(ZoneInfo("Australia/Sydney")).date() <= plan.ends_on)
    assert mirrored == sum(1 for x in booted.demo.sandbox.data.snapshot() if x["type"] == "Referral" and not x["deleted"])
    day = visit.start_at.astimezone(ZoneInfo("Australia/Sydney")).date().isoformat()
    shown = httpx.get(f"{base}/tenants/{DEMO_TENANT}/practitioners/{plan.practitioner_id}/dashboard",
                      params={"date": day}).json()
    care = next(x["carePlan"] for x in shown["sessions"] if x["id"] == visit.source_id)
    assert care["referral"] == plan.source_id and care["sessionsTotal"] == plan.session_limit
    assert care["sessionsUsed"] >= (plan.prior_sessions or 0) + 1 and care["validUntil"] == plan.ends_on.isoformat()


def test_a_sync_triggered_over_http_runs_to_completion_and_shows_in_the_history(booted: Booted) -> None:
    base = f"{booted.host.url}/api/tenants/{DEMO_TENANT}/sync"
    queued = httpx.post(base, json={"kind": "full"})
    assert queued.status_code == 202 and queued.headers["Location"].endswith(queued.json()["runId"])
    run_id = queued.json()["runId"]
    assert httpx.post(base, json={"kind": "full"}).json() == {"error": "already-running", "runId": run_id,
                                                                 "kind": "full"}
    deadline = time.monotonic() + 120
    while (run := httpx.get(f"{base}/runs/{run_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    assert run["status"] == "completed" and run["percentage"] == 100.0 and run["records"]["processed"] > 0
    history = httpx.get(f"{base}/runs", params={"limit": "5"}).json()
    assert [r["runId"] for r in history["runs"]] == [run_id] and history["summary"]["succeeded"] == 1
    assert httpx.post(f"{base}/runs/{run_id}/cancel").status_code == 409
    assert httpx.post(base, json={"kind": "weekly"}).status_code == 400


def test_local_function_key_guards_function_level_routes_only(database_url: str) -> None:
    settings = load_settings(database_url=database_url, fanout_schedule=NEVER, LOCAL_FUNCTION_KEY="local-key")
    running = boot(settings, port=0, say=quiet, demo_counts=SMALL)
    try:
        api = f"{running.host.url}/api"
        runs = f"{api}/tenants/{DEMO_TENANT}/sync/runs"
        assert httpx.get(f"{api}/health").status_code == 200  # anonymous
        assert httpx.get(runs).json() == {"error": "function-key-required"}
        wrong = httpx.get(runs, headers={"x-functions-key": "wrong"})
        assert (wrong.status_code, wrong.json()) == (401, {"error": "function-key-invalid"})
        assert httpx.get(runs, params={"code": "nope"}).json() == {"error": "function-key-invalid"}
        assert httpx.get(runs, params={"code": "local-key"}).status_code == 200
        assert httpx.get(runs, headers={"x-functions-key": "local-key"}).status_code == 200
        # The webhook door stays anonymous: its tenant's own secret decides.
        forged = httpx.post(f"{api}/webhooks/{DEMO_TENANT}/appointment-update", content=b"{}",
                            headers={"Content-Type": "application/fhir+json", "X-Webhook-Secret": "guess"})
        assert forged.json() == {"error": "bad-secret"}
    finally:
        running.stop()
    open_settings = load_settings(database_url=database_url, fanout_schedule=NEVER, LOCAL_FUNCTION_KEY="")
    running = boot(open_settings, port=0, say=quiet, demo_counts=SMALL)
    try:  # empty: no key needed
        assert httpx.get(f"{running.host.url}/api/tenants/{DEMO_TENANT}/sync/runs").status_code == 200
    finally:
        running.stop()


def test_schemathesis_finds_no_server_error_through_the_local_host(booted: Booted, tmp_path: Path) -> None:
    """Generated requests for every operation of /api/openapi.json (bounded): none answers 5xx,
    and every answer matches the document's declared status codes and content types."""
    started = datetime.now(UTC)
    enqueue_reconcile(booted.runtime.queues, DEMO_TENANT, "full")  # real rows behind the reads
    assert wait_for_run(booted.runtime.engine, DEMO_TENANT, "full", started, timeout=120) == "completed"
    report = tmp_path / "junit.xml"
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{booted.host.url}/api/openapi.json",
         "--url", f"{booted.host.url}/api", "--checks", ("not_a_server_error,status_code_conformance,"
         "content_type_conformance"), "--max-examples", "25", "--seed", "7", "--request-timeout", "30",
         "--report", "junit", "--report-junit-path", str(report)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    summary = "\n".join(done.stdout.splitlines()[-25:])
    assert done.returncode == 0, summary
    junit = report.read_text()
    assert 'failures="0"' in junit and 'errors="0"' in junit, summary
    assert junit.count("<testcase") >= 13, summary  # every operation was exercised
    print(summary)  # with -s: what ran (phases, cases generated, warnings)


def test_the_minute_summary_counts_what_happened_since_the_last_line(booted: Booted) -> None:
    from devtools.localhost.serve import MinuteSummary

    assert booted.demo is not None
    summary = MinuteSummary(booted.host, booted.runtime.engine)
    started = datetime.now(UTC)
    enqueue_reconcile(booted.runtime.queues, DEMO_TENANT, "full")
    assert wait_for_run(booted.runtime.engine, DEMO_TENANT, "full", started, timeout=120) == "completed"
    booted.demo.churn(creates=2, updates=6, deletes=0)
    assert booted.demo.sandbox.notifier.drain(timeout=60) and booted.host.wait_idle(timeout=60)
    applied = booted.host.status()["queues"]["changes"]["handled"]
    assert applied > 0
    first = summary.line()
    assert first.startswith(f"last minute: changes applied {applied:,} (0 queued), poisoned 0, ")
    assert "reconciles completed 1, failed 0" in first
    assert summary.line().startswith("last minute: changes applied 0 (0 queued)")  # counted once
    # The demo's difference right after webhooks: what is not yet due is "behind", never "lost".
    explained = booted.demo.explained(booted.runtime.engine)
    assert not explained.lost and not explained.unexpected, explained.summary()


def test_a_function_that_raises_is_a_500_with_its_traceback_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A bug in an HTTP function is never disguised as a 4xx: the host answers 500 and logs it."""
    import azure.functions as func
    import httpx

    from devtools.localhost.host import LocalHost
    from shared.queues.memory import InMemoryQueues
    from shared.settings import load_settings

    app = func.FunctionApp()

    @app.function_name("broken")
    @app.route(route="broken", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def broken(req: func.HttpRequest) -> func.HttpResponse:
        raise ZeroDivisionError("a bug")

    host = LocalHost(app, load_settings(database_url="sqlite://"), InMemoryQueues(), port=0).start()
    try:
        with caplog.at_level("ERROR", logger="devtools.localhost"):
            answer = httpx.get(f"{host.url}/api/broken", timeout=10)
    finally:
        host.stop()
    assert (answer.status_code, answer.json()) == (500, {"error": "function-failed", "function": "broken"})
    (record,) = [r for r in caplog.records if r.name == "devtools.localhost" and r.levelname == "ERROR"]
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError


def test_a_hundred_copies_of_one_delivery_released_at_once_enqueue_once(booted: Booted) -> None:
    """The same validly signed delivery on 100 connections opened first, each held one byte short,
    then completed at once (issue 24, row 1: 2-9 of 100 used to enqueue). Ten rounds."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    from devtools.sandbox.data import Change
    from devtools.sandbox.notify import halaxy_bundle

    assert booted.demo is not None
    secret = booted.demo.tenant.webhook_secrets[0].get_secret_value()
    appointment = booted.demo.sandbox.data.first_live("Appointment")
    for round_ in range(10):
        body = json.dumps(halaxy_bundle(Change("Appointment", appointment, "update", 2, datetime.now(UTC)),
                                        booted.demo.sandbox.base_url, 1000 + round_)).encode()
        request = (f"POST /api/webhooks/{DEMO_TENANT}/appointment-update HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Content-Type: application/fhir+json\r\nX-Webhook-Secret: {secret}\r\n"
                   f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        sockets = [socket.create_connection(("127.0.0.1", booted.host.port), timeout=60) for _ in range(100)]
        for sock in sockets:
            sock.sendall(request[:-1])  # everything but the body's last byte: the handler waits on it

        def finish(sock: socket.socket, request: bytes = request) -> bytes:
            sock.sendall(request[-1:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            sock.close()
            return answer

        with ThreadPoolExecutor(max_workers=100) as pool:
            answers = list(pool.map(finish, sockets))
        statuses = sorted(a.split(b" ", 2)[1].decode() for a in answers)
        assert statuses == ["200"] * 99 + ["202"], (round_, statuses)
        assert all(b'{"duplicate": true}' in a for a in answers if a.split(b" ", 2)[1] == b"200")
    assert booted.host.wait_idle(timeout=60)
    assert booted.host.status()["queues"]["changes"]["handled"] == 10  # one change message per round


def shape(value: Any) -> Any:
    """The structure of an answer: keys, list items' structure and value types (null fits any)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None if value is None else type(value).__name__


def same_shape(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_shape(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return not a or not b or same_shape(a[0], b[0])
    return bool(a == b)


def test_a_cliniko_practice_gets_the_dashboard_of_the_same_practice_on_halaxy(booted: Booted) -> None:
    """make run's two demo tenants are one synthetic practice, on Halaxy (FHIR) and on Cliniko (a
    REST spec): after a full reconcile each, a practitioner's day answers alike."""
    from devtools.localhost.serve import REST_DEMO_TENANT
    from devtools.synthetic import practitioner_id

    assert booted.demo is not None and booted.rest_demo is not None
    started = datetime.now(UTC)
    enqueue_reconcile(booted.runtime.queues, DEMO_TENANT, "full")
    enqueue_reconcile(booted.runtime.queues, REST_DEMO_TENANT, "full")
    engine = booted.runtime.engine
    assert wait_for_run(engine, DEMO_TENANT, "full", started, timeout=120) == "completed"
    assert wait_for_run(engine, REST_DEMO_TENANT, "full", started, timeout=120) == "completed"
    halaxy_id, cliniko_id = practitioner_id(0), str(min(int(r.id) for r in booted.rest_demo.sandbox.api.store.live(
        "practitioners")))
    starts = sorted(r.record["starts_at"] for r in booted.rest_demo.sandbox.api.store.live("appointments")
                    if r.record["practitioner"]["links"]["self"].endswith(f"/{cliniko_id}"))
    day = datetime.fromisoformat(starts[len(starts) // 2].replace("Z", "+00:00")).astimezone(
        ZoneInfo("Australia/Sydney")).date().isoformat()
    base = f"{booted.host.url}/api/tenants"
    halaxy = httpx.get(f"{base}/{DEMO_TENANT}/practitioners/{halaxy_id}/dashboard", params={"date": day})
    cliniko = httpx.get(f"{base}/{REST_DEMO_TENANT}/practitioners/{cliniko_id}/dashboard", params={"date": day})
    assert (halaxy.status_code, cliniko.status_code) == (200, 200), cliniko.text
    a, b = halaxy.json(), cliniko.json()
    assert same_shape(shape(a), shape(b)), (shape(a), shape(b))
    assert a["sessions"], "the chosen day has sessions"
    # The same practice: that day's sessions alike but for their ids, the same week, month and
    # upcoming figures (revenue too), the same practitioner.
    def alike(board: dict[str, Any]) -> Any:
        return ([{k: v for k, v in s.items() if k != "id"} for s in board["sessions"]], board["stats"],
                {k: v for k, v in board["practitioner"].items() if k != "id"})
    assert alike(a) == alike(b)
