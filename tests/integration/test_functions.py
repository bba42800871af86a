"""The registered queue functions, called as the Functions host calls them (func.QueueMessage)."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from sqlalchemy import func as sql
from sqlalchemy import select

from devtools.sandbox.data import SandboxData
from devtools.sandbox.server import Sandbox, SandboxConfig
from devtools.synthetic import SyntheticCounts
from shared.bootstrap import build_runtime, use_runtime
from shared.queues.memory import InMemoryQueues
from shared.queues.messages import ChangeMessage, InvalidMessage, ReconcileMessage, decode, encode
from shared.settings import load_settings
from shared.store.engine import write_transaction
from shared.store.schema import MIRRORED_TABLES, sync_runs
from tests.fakes import registered_functions

NOW = datetime.now(UTC)


def function(name: str) -> Any:
    return registered_functions()[name].get_user_function()


class AheadClock:
    """time.monotonic, or that many seconds ahead of it: the queues' clock in these tests."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.ahead


@pytest.fixture
def setup(database_url: str, tmp_path: Path) -> Iterator[tuple[Sandbox, InMemoryQueues]]:
    box = Sandbox(SandboxData(SyntheticCounts(2, 30, 120, 20), seed=6, anchor=NOW), SandboxConfig(rate_limit=0)).start()
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps([{"id": "demo", "name": "Demo", "fhir_base_url": box.base_url,
                                    "client_id": "sandbox-client", "client_secret": "sandbox-secret"}]))
    queues = InMemoryQueues(clock=AheadClock())
    runtime = build_runtime(load_settings(database_url=database_url, tenants_file=tenants, reconcile_time_budget=0.05),
                            queues=queues)
    use_runtime(runtime)
    yield box, queues
    use_runtime(None)
    runtime.engine.dispose()
    box.stop()


def count(table: str) -> int:
    from shared.bootstrap import runtime

    with runtime().engine.connect() as conn:
        return conn.execute(select(sql.count()).select_from(MIRRORED_TABLES[table])).scalar_one()


def test_the_apply_function_stores_what_the_message_points_to(setup: tuple[Sandbox, InMemoryQueues]) -> None:
    from shared.bootstrap import runtime
    from shared.store.metrics import read_metrics

    message = func.QueueMessage(body=encode(ChangeMessage(tenant="demo", type="Patient", id="PT-2000003",
                                                          received_at=datetime.now(UTC))).encode())
    asyncio.run(function("apply_change_message")(message))
    assert count("clients") == 1
    asyncio.run(function("apply_change_message")(message))  # again: nothing to write
    rt = runtime()
    rt.metrics.flush(rt.engine)
    with rt.engine.connect() as conn:
        counted = read_metrics(conn, "demo")
    assert (counted["apply.applied"], counted["apply.written"], counted["apply.unchanged"]) == (2, 1, 1)
    assert counted["lag.count"] == 1 and counted["lag.sum_ms"] < 60_000  # from receipt to commit
    with pytest.raises(InvalidMessage):  # the host retries it, then moves it to changes-poison
        asyncio.run(function("apply_change_message")(func.QueueMessage(body=b'{"tenant": "demo"}')))
    with pytest.raises(LookupError, match="tenant 'ghost' is not configured"):
        asyncio.run(function("apply_change_message")(func.QueueMessage(
            body=encode(ChangeMessage(tenant="ghost", type="Patient", id="PT-1")).encode())))


def test_a_throttled_change_is_put_back_with_a_delay_not_failed(setup: tuple[Sandbox, InMemoryQueues]) -> None:
    """429 with a long Retry-After: the change comes back when the source allows, as a fresh
    message (no delivery attempt spent); nothing is written meanwhile and nothing is lost."""
    box, queues = setup
    box.limiter.limit = 1  # one read per minute (the token endpoint is not limited)
    apply = function("apply_change_message")
    asyncio.run(apply(func.QueueMessage(body=encode(ChangeMessage(tenant="demo", type="Patient",
                                                                  id="PT-2000003")).encode())))
    second = ChangeMessage(tenant="demo", type="Patient", id="PT-2000004")
    asyncio.run(apply(func.QueueMessage(body=encode(second).encode())))  # throttled: returns, no raise
    assert count("clients") == 1
    assert queues.count("changes") == 1
    assert queues.receive("changes", max_messages=1, visibility_timeout=30) == []  # invisible until Retry-After
    ((text, wait),) = queues.pending("changes")
    assert 50 < wait <= 61
    assert decode(text, ChangeMessage) == second.model_copy(update={"deferrals": 1})
    # A minute later (the Retry-After every instance honours, kept in source_health, has passed)
    # the put-back change applies.
    from shared.bootstrap import runtime
    from shared.store.engine import write_transaction
    from shared.store.schema import source_health

    box.limiter.limit = 0
    with write_transaction(runtime().engine) as conn:
        assert conn.execute(source_health.update().values(not_before=0)).rowcount == 1
    time.sleep(runtime().breaker_store.max_age)  # the process's one copy of that state ages out
    assert isinstance(queues.clock, AheadClock)
    queues.clock.ahead = 61  # the queue's own clock, passed in: a minute later for it
    (message,) = queues.receive("changes", max_messages=1, visibility_timeout=30)
    assert message.dequeue_count == 1
    asyncio.run(apply(func.QueueMessage(body=message.text.encode())))
    assert count("clients") == 2


def test_a_change_deferred_too_often_fails_like_any_source_trouble(setup: tuple[Sandbox, InMemoryQueues]) -> None:
    from shared.service.changes import MAX_DEFERRALS
    from shared.source.errors import SourceUnavailable

    box, queues = setup
    box.limiter.limit = 1
    asyncio.run(function("apply_change_message")(func.QueueMessage(
        body=encode(ChangeMessage(tenant="demo", type="Patient", id="PT-2000003")).encode())))
    message = ChangeMessage(tenant="demo", type="Patient", id="PT-2000004", deferrals=MAX_DEFERRALS)
    with pytest.raises(SourceUnavailable):  # the host retries it, then poisons it: counted, visible
        asyncio.run(function("apply_change_message")(func.QueueMessage(body=encode(message).encode())))
    assert queues.count("changes") == 0


def test_a_change_of_a_tenant_with_refused_credentials_waits_for_them(database_url: str, tmp_path: Path) -> None:
    """The token endpoint refuses the secret: the change is put back for SYNC_CREDENTIALS_RETRY_AFTER
    (one token request, not one per delivery attempt) and applies once the secret is fixed."""
    box = Sandbox(SandboxData(SyntheticCounts(2, 30, 120, 20), seed=6, anchor=NOW), SandboxConfig(rate_limit=0)).start()
    tenants = tmp_path / "tenants.json"

    def configure(secret: str) -> InMemoryQueues:
        tenants.write_text(json.dumps([{"id": "demo", "name": "Demo", "fhir_base_url": box.base_url,
                                        "client_id": "sandbox-client", "client_secret": secret}]))
        queues = InMemoryQueues()
        use_runtime(build_runtime(load_settings(database_url=database_url, tenants_file=tenants,
                                                credentials_retry_after=120), queues=queues))
        return queues

    try:
        queues = configure("wrong")
        apply = function("apply_change_message")

        async def two_changes() -> None:  # one event loop, as in a worker process
            for patient in ("PT-2000003", "PT-2000004"):
                await apply(func.QueueMessage(body=encode(ChangeMessage(tenant="demo", type="Patient",
                                                                        id=patient)).encode()))

        asyncio.run(two_changes())
        assert count("clients") == 0 and queues.count("changes") == 2
        assert all(110 < wait <= 121 for _text, wait in queues.pending("changes"))
        assert box.requests == 1  # the second change did not present the refused secret again
        from shared.bootstrap import runtime

        runtime().engine.dispose()
        parked = [text for text, _wait in queues.pending("changes")]
        queues = configure("sandbox-secret")  # fixed: a new app setting restarts the app
        for text in parked:
            asyncio.run(function("apply_change_message")(func.QueueMessage(body=text.encode())))
        assert count("clients") == 2
    finally:
        from shared.bootstrap import runtime

        runtime().engine.dispose()
        use_runtime(None)
        box.stop()


def test_reconcile_continues_through_the_queue_until_done(setup: tuple[Sandbox, InMemoryQueues]) -> None:
    _box, queues = setup
    step = function("reconcile_step")
    asyncio.run(step(func.QueueMessage(body=encode(ReconcileMessage(tenant="demo", reconcile="full")).encode())))
    invocations = 1
    while queues.count("reconcile"):  # each invocation's budget is 50 ms: a chain of continuations
        (message,) = queues.receive("reconcile", max_messages=1, visibility_timeout=30)
        continuation = decode(message.text, ReconcileMessage)
        assert continuation.run_id is not None
        asyncio.run(step(func.QueueMessage(body=message.text.encode())))
        queues.delete("reconcile", message)
        invocations += 1
        assert invocations < 200
    assert invocations > 1  # more than one budget was needed
    assert count("sessions") == 120 and count("clients") == 30
    from shared.bootstrap import runtime

    with runtime().engine.connect() as conn:
        (status,) = conn.execute(select(sync_runs.c.status)).one()
    assert status == "completed"


def test_a_reconcile_step_that_fails_outside_the_source_is_resumed_by_the_retried_message(
        setup: tuple[Sandbox, InMemoryQueues]) -> None:
    """The database goes away mid-step (the fault matrix's database-killed): the host retries the
    same message, which must take the run over from its checkpoint — not find it "already
    running" and leave it until it goes stale (15 minutes)."""
    from sqlalchemy.exc import OperationalError

    from shared.bootstrap import runtime
    from shared.service.reconciles import reconcile_step
    from shared.sync.reconcile import run_reconcile as real

    calls = []

    async def fails_after_a_page(engine: Any, client: Any, tenant: Any, lease: Any, **kwargs: Any) -> Any:
        calls.append(lease.run_id)
        if len(calls) == 1:
            await real(engine, client, tenant, lease, **{**kwargs, "deadline": 0})  # one page, checkpointed
            raise OperationalError("UPDATE sync_runs", {}, Exception("terminating connection"))
        return await real(engine, client, tenant, lease, **kwargs)

    runtime().settings.__dict__["reconcile_time_budget"] = 300.0  # the retry finishes in one go
    text = encode(ReconcileMessage(tenant="demo", reconcile="full"))
    with pytest.raises(OperationalError):
        asyncio.run(reconcile_step(runtime(), text, run=fails_after_a_page))
    assert asyncio.run(reconcile_step(runtime(), text, run=fails_after_a_page)) == "completed"  # the host's retry
    assert calls[0] == calls[1]  # the same run, resumed
    with runtime().engine.connect() as conn:
        assert conn.execute(select(sync_runs.c.status)).scalars().all() == ["completed"]
    assert count("sessions") == 120 and count("clients") == 30


def test_a_reconcile_message_failing_its_last_attempt_fails_its_run_and_frees_the_slot(
        setup: tuple[Sandbox, InMemoryQueues]) -> None:
    """The host poisons a message after its last attempt: the run must not stay "running" (every
    trigger would get 409 already-running until a reaper came by)."""
    from shared.bootstrap import runtime
    from shared.service.reconciles import reconcile_step

    async def always_fails(*_args: Any, **_kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug in a step")

    text = encode(ReconcileMessage(tenant="demo", reconcile="full"))
    with pytest.raises(ZeroDivisionError):
        asyncio.run(reconcile_step(runtime(), text, run=always_fails))  # an early attempt: released for the retry
    with runtime().engine.connect() as conn:
        assert conn.execute(select(sync_runs.c.status)).scalars().all() == ["running"]
    with pytest.raises(ZeroDivisionError):
        asyncio.run(reconcile_step(runtime(), text, redelivered=True, last_attempt=True, run=always_fails))
    with runtime().engine.connect() as conn:
        assert conn.execute(select(sync_runs.c.status, sync_runs.c.error)).all() == [
            ("failed", "gave up after 5 attempts: ZeroDivisionError")]


def test_a_reconcile_blocked_by_repeated_unique_values_logs_an_error_without_the_values(
        setup: tuple[Sandbox, InMemoryQueues], caplog: pytest.LogCaptureFixture) -> None:
    """docs/sources.md, "Unique columns": the run fails with the values; the log line for the
    alert names the tenant and run but not the values (a unique column may be personal data)."""
    from shared.bootstrap import runtime
    from shared.service.reconciles import reconcile_step
    from shared.source.errors import DuplicateKeys
    from shared.store.runs import finish

    async def repeats(engine: Any, client: Any, tenant: Any, lease: Any, **_kwargs: Any) -> Any:
        error = DuplicateKeys(tenant.id, "facilities: facility_code='SECRET-CODE' on fac-1 and fac-2")
        with engine.begin() as conn:
            finish(conn, lease, "failed", error=str(error))  # as run_reconcile records it
        raise error

    text = encode(ReconcileMessage(tenant="demo", reconcile="full"))
    with caplog.at_level("INFO"):
        assert asyncio.run(reconcile_step(runtime(), text, run=repeats)) == "failed"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "tenant=demo" in errors[0] and "outcome=blocked reason=DuplicateKeys" in errors[0]
    assert "SECRET-CODE" not in caplog.text


def test_the_redelivered_reconcile_message_of_a_crashed_worker_resumes_its_run(
        setup: tuple[Sandbox, InMemoryQueues]) -> None:
    """A worker killed mid-reconcile (the fault matrix's crash faults) leaves its run "running";
    the host hands the message out again (dequeue count 2), and that delivery resumes the run."""
    from azure.functions.queue import QueueMessage  # the host's own class: it carries the dequeue count

    from shared.bootstrap import runtime
    from shared.store.runs import start_run

    with write_transaction(runtime().engine) as conn:  # the dead worker's run: started, no page yet
        dead = start_run(conn, "demo", "full")
    body = encode(ReconcileMessage(tenant="demo", reconcile="full")).encode()
    step = function("reconcile_step")
    asyncio.run(step(QueueMessage(body=body, dequeue_count=1)))  # a fresh message: leaves it be
    assert count("clients") == 0
    runtime().settings.__dict__["reconcile_time_budget"] = 300.0
    asyncio.run(step(QueueMessage(body=body, dequeue_count=2)))
    with runtime().engine.connect() as conn:
        assert conn.execute(select(sync_runs.c.id, sync_runs.c.status)).all() == [(dead.run_id, "completed")]
    assert count("sessions") == 120 and count("clients") == 30


def test_a_targeted_incremental_reads_only_its_types_and_moves_only_their_watermarks(
        setup: tuple[Sandbox, InMemoryQueues]) -> None:
    from shared.bootstrap import runtime
    from shared.service.reconciles import reconcile_step
    from shared.store.schema import sync_cursors

    box, _queues = setup
    box.config.faults.latency_ms = 0
    message = ReconcileMessage(tenant="demo", reconcile="incremental", types=["Appointment", "Invoice"])
    result = asyncio.run(reconcile_step(runtime(), encode(message)))
    while result == "continued":  # a 50 ms budget: follow the chain
        (queued,) = _queues.receive("reconcile", max_messages=1, visibility_timeout=30)
        _queues.delete("reconcile", queued)
        assert decode(queued.text, ReconcileMessage).types is None  # the checkpoint keeps the types
        result = asyncio.run(reconcile_step(runtime(), queued.text))
    assert result == "completed"
    assert (count("sessions"), count("invoices"), count("practitioners")) == (120, 20, 0)
    with runtime().engine.connect() as conn:
        moved = set(conn.execute(select(sync_cursors.c.resource_type)).scalars())
    assert moved == {"Appointment", "Invoice"}


def test_a_replay_rereads_from_its_start_though_the_watermark_is_past_it(setup: tuple[Sandbox, InMemoryQueues]) -> None:
    from datetime import timedelta

    from shared.bootstrap import runtime
    from shared.service.reconciles import reconcile_step
    from shared.store.schema import sync_cursors, sync_runs

    box, queues = setup
    box.config.faults.latency_ms = 0

    def run(message: ReconcileMessage) -> int:
        result = asyncio.run(reconcile_step(runtime(), encode(message)))
        while result == "continued":
            (queued,) = queues.receive("reconcile", max_messages=1, visibility_timeout=30)
            queues.delete("reconcile", queued)
            result = asyncio.run(reconcile_step(runtime(), queued.text))
        assert result == "completed"
        with runtime().engine.connect() as conn:
            return conn.execute(select(sync_runs.c.processed).order_by(sync_runs.c.started_at.desc())
                                .limit(1)).scalar_one()

    incremental = ReconcileMessage(tenant="demo", reconcile="incremental", types=["Invoice"])
    assert run(incremental) == 20  # the first reads everything
    with runtime().engine.connect() as conn:
        mark = conn.execute(select(sync_cursors.c.watermark)).scalar_one()
    assert run(incremental) == 0  # nothing changed since the watermark
    replay = incremental.model_copy(update={"since": NOW - timedelta(days=3650)})
    assert run(replay) == 20  # from ``since``: everything again
    with runtime().engine.connect() as conn:
        assert conn.execute(select(sync_cursors.c.watermark)).scalar_one() >= mark  # never moved back


def test_a_second_reconcile_of_the_same_kind_is_acknowledged_not_run(setup: tuple[Sandbox, InMemoryQueues]) -> None:
    from shared.bootstrap import runtime
    from shared.service.reconciles import reconcile_step
    from shared.store.engine import write_transaction
    from shared.store.runs import start_run

    with write_transaction(runtime().engine) as conn:
        start_run(conn, "demo", "full")
    assert asyncio.run(reconcile_step(runtime(), encode(ReconcileMessage(tenant="demo", reconcile="full")))) == "already-running"


def test_the_timer_fans_out_one_message_per_due_tenant_and_kind(setup: tuple[Sandbox, InMemoryQueues]) -> None:
    from datetime import timedelta

    from shared.bootstrap import runtime
    from shared.service.reconciles import fan_out
    from shared.store.engine import write_transaction
    from shared.store.runs import finish, start_run

    _box, queues = setup
    now = datetime(2026, 1, 1, 10, 7, tzinfo=UTC)
    assert fan_out(runtime(), now) == [("demo", "full")]  # never loaded: its first full run alone
    (message,) = queues.receive("reconcile", max_messages=5, visibility_timeout=30)
    assert decode(message.text, ReconcileMessage) == ReconcileMessage(tenant="demo", reconcile="full")
    queues.delete("reconcile", message)
    with write_transaction(runtime().engine) as conn:  # the full run is still going: still nothing else
        lease = start_run(conn, "demo", "full", now=now - timedelta(minutes=1))
    assert fan_out(runtime(), now) == []
    with write_transaction(runtime().engine) as conn:  # loaded: the kinds that never ran are due
        finish(conn, lease, "completed")
    assert fan_out(runtime(), now) == [("demo", "hot"), ("demo", "incremental")]
    for message in queues.receive("reconcile", max_messages=5, visibility_timeout=30):
        queues.delete("reconcile", message)
    with write_transaction(runtime().engine) as conn:  # each kind ran at 10:05, after the 10:05/10:00 fires
        for kind in ("full", "hot", "incremental"):
            finish(conn, start_run(conn, "demo", kind, now=now - timedelta(minutes=2)), "completed")
    assert fan_out(runtime(), now) == [] and queues.count("reconcile") == 0
    assert fan_out(runtime(), now + timedelta(minutes=4)) == [("demo", "hot")]  # 10:10 fired for */5 only
    assert fan_out(runtime(), now + timedelta(minutes=10)) == [("demo", "hot"), ("demo", "incremental")]  # 10:15


def test_tenant_schedules_are_validated_at_start_up() -> None:
    from shared.settings import SettingsError, parse_tenants

    with pytest.raises(SettingsError, match="schedule: Value error, expected NCRONTAB"):
        parse_tenants(json.dumps([{"id": "x", "name": "X", "fhir_base_url": "http://h/main", "client_id": "c",
                                   "client_secret": "s", "schedule": "61 * * * * *"}]), source="t")


def test_the_runtime_clock_is_the_time_the_functions_answer_with(database_url: str, tmp_path: Path) -> None:
    """The services and the HTTP functions read the runtime's clock, so a test passes a time in."""
    fixed = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps([{"id": "demo", "name": "Demo", "fhir_base_url": "http://127.0.0.1:9/main",
                                    "client_id": "c", "client_secret": "s"}]))
    runtime = build_runtime(load_settings(database_url=database_url, tenants_file=tenants), queues=InMemoryQueues(),
                            clock=lambda: fixed)
    use_runtime(runtime)
    try:
        from shared.service.reconciles import fan_out

        answer = function("health")(func.HttpRequest("GET", "http://localhost/api/health", body=b""))
        assert json.loads(answer.get_body())["checkedAt"] == fixed.isoformat()
        assert fan_out(runtime) == [("demo", "full")]  # due at the fixed time: never loaded
    finally:
        use_runtime(None)
        runtime.engine.dispose()
