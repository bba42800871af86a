"""Applying change messages against the sandbox: re-read, guard, tombstone, typed failures."""
from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from devtools.sandbox.data import SandboxData
from devtools.sandbox.server import Sandbox, SandboxConfig
from devtools.synthetic import SyntheticCounts
from shared.queues.messages import ChangeMessage
from shared.settings import TenantConfig
from shared.source.breaker import MemoryBreakerStore
from shared.source.errors import SourceUnavailable
from shared.source.registry import SourceRegistry
from shared.source.retry import RetryPolicy
from shared.store.schema import clients, sessions
from shared.sync.apply import ApplyResult, apply_change

NOW = datetime.now(UTC)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(SandboxData(SyntheticCounts(2, 20, 60, 10), seed=8, anchor=NOW), SandboxConfig(rate_limit=0)).start()
    yield box
    box.stop()


def apply_all(engine: Engine, box: Sandbox, messages: list[ChangeMessage], **client_kwargs: Any) -> list[ApplyResult]:
    tenant = TenantConfig(id="demo", name="Demo", fhir_base_url=box.base_url, client_id="sandbox-client",
                          client_secret="sandbox-secret")

    async def go() -> list[ApplyResult]:
        async with httpx.AsyncClient() as http:
            client = SourceRegistry(http, MemoryBreakerStore()).client(tenant)
            for name, value in client_kwargs.items():
                setattr(client, name, value)
            return [await apply_change(engine, client, m) for m in messages]
    return asyncio.run(go())


def stored(engine: Engine, sid: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(sessions.c.source_version, sessions.c.deleted_at, sessions.c.status)
                            .where(sessions.c.source_id == sid)).first()


def test_duplicate_and_out_of_order_hints_converge_on_the_source(engine: Engine, sandbox: Sandbox) -> None:
    appointment = "AP-3000005"
    first = apply_all(engine, sandbox, [ChangeMessage(tenant="demo", type="Appointment", id=appointment)])
    assert first[0].outcome == "applied" and first[0].counts.inserted == 1
    sandbox.data.churn(updates=30)  # the appointment may or may not change: the source decides
    current = sandbox.data.read("Appointment", appointment)
    assert current is not None
    version = current.version
    hints = [ChangeMessage(tenant="demo", type="Appointment", id=appointment, action="update", version="1")] * 5
    results = apply_all(engine, sandbox, hints)
    assert [r.outcome for r in results] == ["applied"] * 5
    assert sum(r.counts.unchanged for r in results) >= 4  # duplicates cost no write
    assert stored(engine, appointment).source_version == str(version)


def test_deleted_or_unknown_at_the_source_becomes_a_tombstone(engine: Engine, sandbox: Sandbox) -> None:
    apply_all(engine, sandbox, [ChangeMessage(tenant="demo", type="Appointment", id="AP-3000001")])
    with sandbox.data.lock:
        stored_one = sandbox.data.by_type["Appointment"]["AP-3000001"]
        sandbox.data.order["Appointment"].remove((stored_one.updated, "AP-3000001"))
        stored_one.deleted_at = datetime.now(UTC)
    results = apply_all(engine, sandbox, [ChangeMessage(tenant="demo", type="Appointment", id="AP-3000001"),
                                          ChangeMessage(tenant="demo", type="Appointment", id="AP-404")])
    assert [r.outcome for r in results] == ["deleted", "deleted"]
    assert stored(engine, "AP-3000001").deleted_at is not None
    assert stored(engine, "AP-404").deleted_at is not None  # remembered, so a stale create cannot revive it


def test_unmappable_is_acknowledged_with_the_reason(engine: Engine, sandbox: Sandbox) -> None:
    with sandbox.data.lock:
        stored_one = sandbox.data.by_type["Appointment"]["AP-3000002"]
        resource = {**stored_one.resource, "status": "teleported"}
        sandbox.data.write(resource, stored_one.updated, stored_one.version)
    (result,) = apply_all(engine, sandbox, [ChangeMessage(tenant="demo", type="Appointment", id="AP-3000002")])
    assert result.outcome == "unmappable" and "unmapped status 'teleported'" in (result.reason or "")
    assert stored(engine, "AP-3000002") is None


def test_source_trouble_is_raised_for_the_queue_to_retry(engine: Engine, sandbox: Sandbox) -> None:
    sandbox.config.faults.error_rate = 1.0
    with pytest.raises(SourceUnavailable):
        apply_all(engine, sandbox, [ChangeMessage(tenant="demo", type="Patient", id="PT-2000001")],
                  policy=RetryPolicy(max_attempts=2, base_delay=0.01), rng=random.Random(1))
    with engine.connect() as conn:
        assert conn.execute(select(clients.c.source_id)).first() is None  # nothing written


def test_a_message_for_another_tenant_is_refused(engine: Engine, sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="message for tenant other"):
        apply_all(engine, sandbox, [ChangeMessage(tenant="other", type="Patient", id="PT-2000001")])
