"""REST webhooks into a real database: the PPB sandbox's events received (signature, event id,
allowlist), applied from their payload (PPB has no single-record read), and ordered against a
full listing by the rule in docs/sources.md — a record's version is when it was seen."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from devtools.compare import record_digest
from devtools.sandbox.rest.apis import build_api
from devtools.sandbox.rest.server import RestConfig, RestSandbox
from shared.metrics import Metrics
from shared.queues.memory import InMemoryQueues
from shared.queues.messages import CHANGES_QUEUE, ChangeMessage, decode
from shared.settings import TenantConfig, parse_tenants
from shared.source.breaker import MemoryBreakerStore
from shared.source.budget import RateBudget
from shared.source.registry import SourceRegistry
from shared.store.declared import declare, ensure_tables, find_table
from shared.store.engine import write_transaction
from shared.store.runs import start_run
from shared.sync.apply import apply_change
from shared.sync.reconcile import run_reconcile
from shared.webhooks.receive import receive_webhook
from shared.webhooks.signatures import hmac_sha256_hex

ROOT = Path(__file__).resolve().parents[2]
SECRET = "ppb-webhook-secret"


@pytest.fixture
def box() -> Iterator[RestSandbox]:
    sandbox = RestSandbox(build_api("ppb-premises", seed=8, records=30), RestConfig(rate_limit=0)).start()
    yield sandbox
    sandbox.stop()


def ppb_tenant(box: RestSandbox, **extra: Any) -> TenantConfig:
    raw = json.loads((ROOT / "samples" / "tenants.ppb-premises.json").read_text())["tenants"][0]
    raw.update(base_url=box.base_url, webhook_secrets=[SECRET], page_size=10, **extra)
    (tenant,) = parse_tenants(json.dumps([raw]), source="test")
    return tenant


def deliver(engine: Engine, queues: InMemoryQueues, tenant: TenantConfig, event: dict[str, Any],
            headers: dict[str, str] | None = None, secret: str = SECRET) -> Any:
    body = json.dumps(event).encode()
    return receive_webhook(engine, queues, tenant, "events", {
        "Content-Type": "application/json", "x-ppb-signature": hmac_sha256_hex(secret, body), **(headers or {})},
        body, datetime.now(UTC), Metrics())


def apply_all(engine: Engine, queues: InMemoryQueues, tenant: TenantConfig) -> list[str]:
    async def go() -> list[str]:
        async with httpx.AsyncClient() as http:
            source = SourceRegistry(http, MemoryBreakerStore()).source(tenant)
            out = []
            for received in queues.receive(CHANGES_QUEUE, max_messages=32, visibility_timeout=30):
                out.append((await apply_change(engine, source, decode(received.text, ChangeMessage))).outcome)
                queues.delete(CHANGES_QUEUE, received)
            return out
    return asyncio.run(go())


def hie_tenant(engine: Engine, box: RestSandbox) -> TenantConfig:
    """The HIE sample tenant on ``box``, its tables created."""
    raw = json.loads((ROOT / "samples" / "tenants.hie-facilities.json").read_text())["tenants"][0]
    raw.update(base_url=box.base_url, token_url=f"{box.base_url}/oauth2/token", webhook_secrets=[SECRET])
    (tenant,) = parse_tenants(json.dumps([raw]), source="test")
    ensure_tables(engine, declare([tenant.rest_spec()]))
    return tenant


def send_hie(engine: Engine, queues: InMemoryQueues, tenant: TenantConfig, event: dict[str, Any]) -> None:
    body = json.dumps(event).encode()
    answer = receive_webhook(engine, queues, tenant, "events", {
        "Content-Type": "application/json", "x-hie-signature": hmac_sha256_hex(SECRET, body)},
        body, datetime.now(UTC), Metrics())
    assert answer.status == 202, answer.body


def stored(engine: Engine, premise: str) -> Any:
    table = find_table("premises")
    with engine.connect() as conn:
        return conn.execute(select(table).where(table.c.tenant_id == "ppb-premises",
                                                table.c.source_id == premise)).first()


def test_an_event_is_authenticated_claimed_once_and_applied_from_its_payload(engine: Engine,
                                                                             box: RestSandbox) -> None:
    tenant = ppb_tenant(box)
    ensure_tables(engine, declare([tenant.rest_spec()]))
    queues = InMemoryQueues()
    record = {"premiseid": 4242, "premisename": "Baraka Pharmacy", "licenseno": "PPB/P/4242"}
    event = {"action": "created", "timestamp": "2026-12-03T09:00:00Z", "webhookId": "w-1", "data": record}
    first = deliver(engine, queues, tenant, event)
    again = deliver(engine, queues, tenant, event)
    forged = deliver(engine, queues, tenant, {**event, "webhookId": "w-2"}, secret="guess")
    assert (first.status, first.body, again.status, again.body) == (202, {"accepted": 1}, 200, {"duplicate": True})
    assert (forged.status, forged.body) == (401, {"error": "bad-signature"})
    (message,) = [decode(t, ChangeMessage) for t, _ in queues.pending(CHANGES_QUEUE)]
    assert (message.type, message.id, message.event_key, message.data) == ("premises", "4242", "event:w-1", record)
    assert apply_all(engine, queues, tenant) == ["applied"]
    row = stored(engine, "4242")
    assert (row.premise_name, row.source_updated_at, json.loads(row.record)) == (
        "Baraka Pharmacy", datetime(2026, 12, 3, 9, tzinfo=UTC), record)
    gone = deliver(engine, queues, tenant, {"action": "deleted", "timestamp": "2026-12-03T09:05:00Z",
                                            "webhookId": "w-3", "data": {"premiseid": 4242}})
    assert gone.status == 202 and apply_all(engine, queues, tenant) == ["deleted"]
    assert stored(engine, "4242").deleted_at == datetime(2026, 12, 3, 9, 5, tzinfo=UTC)


def test_a_message_delivered_again_after_its_commit_does_not_put_back_an_older_record(engine: Engine,
                                                                                      box: RestSandbox) -> None:
    """The fault matrix's crash-after-commit: the worker commits event A, dies before deleting its
    message; event B (same record, same second at a source whose time has no finer grain) is
    applied; A's message comes back. It must not be applied again (the version guard cannot tell
    A from B at an equal time, and content differing applies)."""
    tenant = ppb_tenant(box)
    ensure_tables(engine, declare([tenant.rest_spec()]))
    queues = InMemoryQueues()
    at = "2026-12-03T09:00:00Z"
    a = {"action": "updated", "timestamp": at, "webhookId": "a", "data": {"premiseid": 7, "premisename": "A"}}
    b = {"action": "updated", "timestamp": at, "webhookId": "b", "data": {"premiseid": 7, "premisename": "B"}}
    assert deliver(engine, queues, tenant, a).status == 202
    (redelivered,) = queues.pending(CHANGES_QUEUE)  # the same message, as the queue hands it out again
    assert apply_all(engine, queues, tenant) == ["applied"]
    assert deliver(engine, queues, tenant, b).status == 202 and apply_all(engine, queues, tenant) == ["applied"]
    queues.send(CHANGES_QUEUE, redelivered[0])
    assert apply_all(engine, queues, tenant) == ["already-applied"]
    assert stored(engine, "7").premise_name == "B"


def test_two_events_of_one_second_apply_in_the_order_they_were_sent_whatever_order_they_arrive(
        engine: Engine) -> None:
    """HIE's lastUpdated is to the second: two changes of a facility within one second look equal
    to the guard's first key. Their events' times (microseconds) order them, so the later one wins
    even when the earlier arrives last (a worker died holding it); and a listing page asked for
    before the later event does not put the earlier content back."""
    box = RestSandbox(build_api("hie-facilities", seed=3, records=5), RestConfig(rate_limit=0)).start()
    try:
        tenant = hie_tenant(engine, box)
        queues = InMemoryQueues()
        record = sorted(box.api.store.live("facilities"), key=lambda r: r.id)[0].record
        second = "2026-12-03 09:00:00"
        a = {"eventId": "a", "action": "updated", "timestamp": "2026-12-03T09:00:00.200000Z",
             "data": {**record, "kephLevel": 2, "lastUpdated": second}}
        b = {"eventId": "b", "action": "updated", "timestamp": "2026-12-03T09:00:00.700000Z",
             "data": {**record, "kephLevel": 5, "lastUpdated": second}}
        send_hie(engine, queues, tenant, a)
        (late,) = queues.pending(CHANGES_QUEUE)
        queues.delete(CHANGES_QUEUE, queues.receive(CHANGES_QUEUE, max_messages=1, visibility_timeout=30)[0])
        send_hie(engine, queues, tenant, b)
        assert apply_all(engine, queues, tenant) == ["applied"]  # b first
        queues.send(CHANGES_QUEUE, late[0])
        assert apply_all(engine, queues, tenant) == ["applied"]  # then a: not applied before, so not skipped
        table = find_table("facilities")
        with engine.connect() as conn:
            keph = conn.execute(select(table.c.keph_level).where(table.c.source_id == record["id"])).scalar()
        assert keph == 5
    finally:
        box.stop()


def test_a_listing_answered_after_two_changes_of_one_second_does_not_let_the_first_back(engine: Engine) -> None:
    """The fault matrix's source-trouble found it: a listing page is asked for (its version: that
    moment), the source then changes a facility twice within one second (a then b) and answers
    with b's content; the page is written. Event b arrives and changes nothing (the same content),
    then event a, whose time is after the page's. b's sighting must have moved the version on,
    or a — older than b, newer than the page — would put its content back."""
    box = RestSandbox(build_api("hie-facilities", seed=4, records=5), RestConfig(rate_limit=0)).start()
    try:
        tenant = hie_tenant(engine, box)
        queues = InMemoryQueues()
        facility = sorted(box.api.store.live("facilities"), key=lambda r: r.id)[0]
        # Both changes come after the page is asked for: a second an hour ahead of now.
        second = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        a = {**facility.record, "kephLevel": 2, "lastUpdated": second.strftime("%Y-%m-%d %H:%M:%S")}
        b = {**facility.record, "kephLevel": 5, "lastUpdated": second.strftime("%Y-%m-%d %H:%M:%S")}
        facility.record = b  # what the source answers the listing with

        async def listing() -> None:
            async with httpx.AsyncClient() as http:
                source = SourceRegistry(http, MemoryBreakerStore()).source(tenant)
                source.budget = RateBudget(limit=10**9)  # type: ignore[attr-defined]
                with write_transaction(engine) as conn:
                    lease = start_run(conn, tenant.id, "full")
                assert await run_reconcile(engine, source, tenant, lease)
        table = find_table("facilities")

        def versions() -> dict[str, str]:
            with engine.connect() as conn:
                return dict(conn.execute(select(table.c.source_id, table.c.source_version)
                                         .where(table.c.tenant_id == tenant.id)).all())
        asyncio.run(listing())
        first = versions()
        asyncio.run(listing())
        # Listed again unchanged: rows seen long after they changed are not touched (no write);
        # the one whose change time has not ended yet has its version moved on.
        assert {k for k, v in versions().items() if v != first[k]} == {facility.id}
        for event_id, data, micros in (("b", b, 557), ("a", a, 509)):  # a sent first, delivered last
            send_hie(engine, queues, tenant, {"eventId": event_id, "action": "updated", "data": data,
                                              "timestamp": (second + timedelta(microseconds=micros)).isoformat()})
        apply_all(engine, queues, tenant)
        with engine.connect() as conn:
            keph = conn.execute(select(table.c.keph_level).where(table.c.tenant_id == tenant.id,
                                                                 table.c.source_id == facility.id)).scalar()
        assert keph == 5
    finally:
        box.stop()


def test_an_older_event_arriving_after_a_newer_one_that_changed_nothing_is_stale(engine: Engine,
                                                                                 box: RestSandbox) -> None:
    """PPB states no change time. A premise is changed to X1 and then back to X0; the second
    event arrives first and changes nothing (the mirror holds X0), then the first arrives. It must
    not win: the unchanged sighting moved the version on (the fault matrix's crash-after-commit
    found a premise left at X1)."""
    tenant = ppb_tenant(box)
    ensure_tables(engine, declare([tenant.rest_spec()]))
    queues = InMemoryQueues()
    x0 = {"premiseid": 8, "premisename": "Original"}
    first = {"action": "updated", "timestamp": "2026-12-03T09:00:00Z", "webhookId": "x0", "data": x0}
    assert deliver(engine, queues, tenant, first).status == 202 and apply_all(engine, queues, tenant) == ["applied"]
    to_x1 = {"action": "updated", "timestamp": "2026-12-03T09:01:00Z", "webhookId": "x1",
             "data": {"premiseid": 8, "premisename": "Changed"}}
    back = {"action": "updated", "timestamp": "2026-12-03T09:02:00Z", "webhookId": "back", "data": x0}
    for event in (back, to_x1):  # the newer one first
        assert deliver(engine, queues, tenant, event).status == 202
        apply_all(engine, queues, tenant)
    row = stored(engine, "8")
    assert (row.premise_name, row.source_updated_at) == ("Original", datetime(2026, 12, 3, 9, 2, tzinfo=UTC))


def test_the_allowlist_refuses_other_addresses_before_anything_else(engine: Engine, box: RestSandbox) -> None:
    tenant = ppb_tenant(box, webhook_allowed_ips=["10.0.0.0/8"])
    queues = InMemoryQueues()
    event = {"action": "updated", "webhookId": "w-9", "data": {"premiseid": 1}}
    refused = deliver(engine, queues, tenant, event, {"client-ip": "192.0.2.7:40000"})
    unknown = deliver(engine, queues, tenant, event)
    allowed = deliver(engine, queues, tenant, event, {"client-ip": "10.4.4.4:40000"})
    assert [(a.status, a.body) for a in (refused, unknown)] == [
        (403, {"error": "ip-not-allowed"}), (403, {"error": "client-ip-unknown"})]
    assert allowed.status == 202 and queues.count(CHANGES_QUEUE) == 1


def test_a_webhook_during_a_full_listing_wins_over_the_page_asked_for_before_it(engine: Engine,
                                                                               box: RestSandbox) -> None:
    """The page holding premise X is asked for; then X changes at the source and its event is
    applied; then that page commits. The page's older copy of X must not win (it was seen before
    the event) — and a premise the page saw after its own event keeps the page's newer copy."""
    tenant = ppb_tenant(box)
    ensure_tables(engine, declare([tenant.rest_spec()]))
    api = box.api
    first_page = sorted(api.store.live("premises"), key=lambda r: int(r.id))[:10]
    late, early = first_page[3], first_page[6]
    queues = InMemoryQueues()
    # An event the source sent an hour ago for `early`: the listing sees it afterwards, and wins.
    old = {**early.record, "premisename": "Before the listing"}
    deliver(engine, queues, tenant, {"action": "updated", "webhookId": "old", "data": old,
                                     "timestamp": (datetime.now(UTC) - timedelta(hours=1)).isoformat()})
    assert apply_all(engine, queues, tenant) == ["applied"]

    class DuringTheListing(httpx.AsyncBaseTransport):
        """Once the first page's answer is in (asked for, not yet committed), `late` changes at
        the source and its webhook is received and applied."""

        def __init__(self) -> None:
            self.inner, self.done = httpx.AsyncHTTPTransport(), False

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            if not self.done and request.url.params.get("page") == "0":
                self.done = True
                await response.aread()
                changed = api.update("premises", late.record, datetime.now(UTC))
                late.record, late.updated = changed, datetime.now(UTC)
                event = {"action": "updated", "webhookId": "during", "timestamp": datetime.now(UTC).isoformat(),
                         "data": changed}
                await asyncio.to_thread(deliver, engine, queues, tenant, event)
                assert await asyncio.to_thread(apply_all, engine, queues, tenant) == ["applied"]
            return response

    async def full() -> None:
        async with httpx.AsyncClient(transport=DuringTheListing()) as http:
            source = SourceRegistry(http, MemoryBreakerStore()).source(tenant)
            source.budget = RateBudget(limit=10**9)  # type: ignore[attr-defined]
            with write_transaction(engine) as conn:
                lease = start_run(conn, tenant.id, "full")
            assert await run_reconcile(engine, source, tenant, lease)
    asyncio.run(full())
    kept = stored(engine, late.id)
    assert record_digest(json.loads(kept.record)) == record_digest(late.record)  # the event's copy, not the page's
    assert json.loads(stored(engine, early.id).record) == early.record  # the listing's, newer than the old event
