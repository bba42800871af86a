"""Each REST source end to end: its sandbox over HTTP, the samples' tenants file, a real database.

Full sync, churn (creates, updates, deletes), incremental (a diff for PPB, which cannot filter by
change), and full again with delete detection: after each, the mirror equals the sandbox's truth
— live ids, their versions where the source states them, and for declared tables the whole
record kept as JSON.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from devtools.compare import compare, rest_mirrored, rest_truth
from devtools.sandbox.rest.apis import build_api
from devtools.sandbox.rest.server import RestConfig, RestSandbox
from devtools.synthetic import SyntheticCounts
from shared.settings import TenantConfig, parse_tenants
from shared.source.breaker import MemoryBreakerStore
from shared.source.budget import RateBudget
from shared.source.registry import SourceRegistry
from shared.store.declared import declare, ensure_tables
from shared.store.engine import write_transaction
from shared.store.runs import start_run
from shared.store.schema import sync_runs
from shared.sync.reconcile import run_reconcile

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("hie-facilities", "ppb-premises", "cliniko", "pems")
NOW = datetime.now(UTC).replace(microsecond=0)
EQUAL = "lost 0 [], unexpected 0 []"


@pytest.fixture(params=SOURCES)
def box(request: pytest.FixtureRequest) -> Iterator[RestSandbox]:
    # PEMS in two organizations: the sample tenant mirrors org-1 only.
    api = build_api(request.param, seed=5, records=240, counts=SyntheticCounts(3, 40, 160, 60), anchor=NOW,
                    organizations=2)
    sandbox = RestSandbox(api, RestConfig(rate_limit=0)).start()
    yield sandbox
    sandbox.stop()


def sample_tenant(box: RestSandbox) -> TenantConfig:
    """samples/tenants.NAME.json, pointed at this sandbox's port."""
    text = (ROOT / "samples" / f"tenants.{box.api.name}.json").read_text()
    (tenant,) = parse_tenants(text.replace("127.0.0.1:7072", f"127.0.0.1:{box.port}"), source="sample",
                              spec_folder=ROOT / "samples")
    return tenant


def reconcile(engine: Engine, tenant: TenantConfig, kind: str, now: datetime, *, invocations: list[int] | None = None
              ) -> Any:
    """Run one reconcile to its end; with ``invocations``, as one invocation a page (each stops
    after its first checkpoint and the next resumes from it), appending how many it took."""
    async def go() -> None:
        async with httpx.AsyncClient() as http:
            source = SourceRegistry(http, MemoryBreakerStore()).source(tenant)
            source.budget = RateBudget(limit=10**9)  # type: ignore[attr-defined]
            with write_transaction(engine) as conn:
                lease = start_run(conn, tenant.id, kind)
            if invocations is None:
                assert await run_reconcile(engine, source, tenant, lease, now=lambda: now)
                return
            count = 1
            while not await run_reconcile(engine, source, tenant, lease, now=lambda: now, deadline=0, clock=lambda: 1):
                count += 1
            invocations.append(count)
    asyncio.run(go())
    return latest_run(engine, tenant.id)


def latest_run(engine: Engine, tenant_id: str) -> Any:
    """The tenant's latest run's row (status, counts, error)."""
    with engine.connect() as conn:
        return conn.execute(select(sync_runs).where(sync_runs.c.tenant_id == tenant_id)
                            .order_by(sync_runs.c.started_at.desc())).first()


def churn(box: RestSandbox, creates: int, updates: int, deletes: int) -> list[dict[str, Any]]:
    answer = httpx.post(f"{box.base_url}/_sandbox/churn", json={"creates": creates, "updates": updates,
                                                              "deletes": deletes})
    answer.raise_for_status()
    changes: list[dict[str, Any]] = answer.json()["changes"]
    return changes


def test_a_rest_source_is_mirrored_through_full_churn_incremental_and_full(engine: Engine, box: RestSandbox) -> None:
    tenant = sample_tenant(box)
    ensure_tables(engine, declare([tenant.rest_spec()]))

    first = reconcile(engine, tenant, "full", datetime.now(UTC))
    expected = rest_truth(box.api, tenant)
    assert compare(rest_mirrored(engine, tenant), expected).summary() == EQUAL
    assert (first.status, first.inserted, first.errored) == ("completed", len(expected), 0)

    changes = churn(box, creates=6, updates=6, deletes=3)
    later = datetime.now(UTC) + timedelta(minutes=5)  # past the 2-minute lag: the churn is due
    second = reconcile(engine, tenant, "incremental", later)
    now_true, mirrored = rest_truth(box.api, tenant), rest_mirrored(engine, tenant)
    # Creates and updates are in; deletions wait for a full listing (the sources send no tombstones).
    difference = compare(mirrored, now_true)
    assert difference.lost == []
    assert {source_id for _, source_id, _ in difference.unexpected} <= {
        c["id"] for c in changes if c["action"] == "deleted"}
    changed = {c["id"] for c in changes if c["action"] != "deleted"}
    if tenant.rest_spec().entities[0].updated_at is None:
        # PPB lists everything (the sandbox refuses updatedSince, as today's catalogue would): a
        # diff writes only what changed.
        assert second.processed == len(now_true)
        assert second.inserted + second.updated <= len(changed)
        assert second.unchanged >= len(now_true) - len(changed)

    third = reconcile(engine, tenant, "full", later)
    assert compare(rest_mirrored(engine, tenant), rest_truth(box.api, tenant)).summary() == EQUAL
    assert (third.status, third.errored, third.inserted + third.updated, third.deleted) == (
        "completed", 0, 0, len(difference.unexpected))


def test_a_rest_sandbox_takes_its_faults_at_run_time_and_refuses_bad_ones(box: RestSandbox) -> None:
    faults = f"{box.base_url}/_sandbox/faults"
    changed = httpx.post(faults, json={"fault_rate": 0.5, "rate_limit": 7})
    refused = httpx.post(faults, json={"fault_rate": 2, "rate_limit": 1})
    now = httpx.get(faults).json()
    assert changed.status_code == 200 and refused.status_code == 400
    assert (now["rate_limit"], box.limiter.limit, box.config.faults.error_rate) == (7, 7, 0.5)


@pytest.mark.parametrize("updated_since", ["refused", "ignored", "supported"])
def test_ppb_asks_for_changes_and_falls_back_to_a_full_diff_when_the_catalogue_cannot(
        engine: Engine, updated_since: str) -> None:
    """PPB's spec asks for ?updatedSince=; today's catalogue refuses it (400) or may ignore it:
    then the incremental run lists everything and diffs it; once it is supported, only what
    changed is listed. The mirror is right either way."""
    api = build_api("ppb-premises", seed=6, records=120, anchor=NOW)
    api.updated_since = updated_since  # type: ignore[attr-defined]
    box = RestSandbox(api, RestConfig(rate_limit=0)).start()
    try:
        tenant = sample_tenant(box)
        ensure_tables(engine, declare([tenant.rest_spec()]))
        assert reconcile(engine, tenant, "full", datetime.now(UTC)).status == "completed"
        changed = {c["id"] for c in churn(box, creates=3, updates=5, deletes=0)}
        requests = box.requests
        run = reconcile(engine, tenant, "incremental", datetime.now(UTC) + timedelta(minutes=5))
        assert compare(rest_mirrored(engine, tenant), rest_truth(box.api, tenant)).summary() == EQUAL
        assert (run.status, run.inserted) == ("completed", 3) and run.updated <= 5  # an update may change nothing
        listed = {"refused": 123, "ignored": 123, "supported": len(changed)}[updated_since]
        assert run.processed == listed  # the whole catalogue, or only what changed
        # The sample tenant's pages hold 1,000: one request, plus the refused one first.
        assert box.requests - requests == (2 if updated_since == "refused" else 1)
    finally:
        box.stop()


@contextlib.contextmanager
def mirrored_paged_ppb(engine: Engine, seed: int) -> Iterator[tuple[Any, RestSandbox, TenantConfig]]:
    """A 60-premise PPB sandbox and its sample tenant at 10 premises a page, mirrored by a first
    full run: (the sandbox's API, the sandbox, the tenant)."""
    api = build_api("ppb-premises", seed=seed, records=60, anchor=NOW)
    box = RestSandbox(api, RestConfig(rate_limit=0)).start()
    try:
        raw = json.loads((ROOT / "samples" / "tenants.ppb-premises.json").read_text())["tenants"][0]
        raw.update(base_url=box.base_url, page_size=10)
        (tenant,) = parse_tenants(json.dumps([raw]), source="test")
        ensure_tables(engine, declare([tenant.rest_spec()]))
        assert reconcile(engine, tenant, "full", datetime.now(UTC)).status == "completed"
        yield api, box, tenant
    finally:
        box.stop()


def full_while_changing(engine: Engine, tenant: TenantConfig, api: Any, after_page: Callable[[int], None],
                        now: datetime, **kwargs: Any) -> Any:
    """A full run while the source changes: ``after_page(n)`` runs under the store's lock once
    the n-th page (from 0) is answered."""
    route, answered = api.route, iter(range(10**6))

    def changing(req: Any) -> Any:
        answer = route(req)
        with api.store.lock:
            after_page(next(answered))
        return answer
    api.route = changing
    try:
        return reconcile(engine, tenant, "full", now, **kwargs)
    finally:
        api.route = route


def test_a_listing_that_keeps_shifting_takes_nothing_for_deleted(engine: Engine) -> None:
    """PPB pages by number in premise order. A premise deleted at the source while the listing is
    read shifts every later one back a place, so one is never listed; the stated total
    (page.totalElements) drops and the listing is read again — up to MAX_WINDOW_RESTARTS times.
    When deletions keep coming (the fault matrix's storm: a slow, rate-limited listing while
    premises are deleted), the last read may still have skipped one: that full run must not take
    it for deleted (it records why instead), and the next full settles everything."""
    with mirrored_paged_ppb(engine, seed=7) as (api, box, tenant):
        def delete_the_lowest(page: int) -> None:  # two a read: past MAX_WINDOW_RESTARTS (3), under the cap (10)
            if page < 8:
                lowest = min(api.store.live("premises"), key=lambda r: int(r.id))
                lowest.deleted, lowest.updated = True, datetime.now(UTC)
        run = full_while_changing(engine, tenant, api, delete_the_lowest, datetime.now(UTC) + timedelta(minutes=5))
        difference = compare(rest_mirrored(engine, tenant), rest_truth(box.api, tenant))
        assert difference.lost == [], difference.summary()  # no premise the source still has was deleted
        assert (run.status, run.deleted) == ("completed", 0)
        assert "premises: the listing kept shifting while it was read; deletions not detected" in run.error
        settled = reconcile(engine, tenant, "full", datetime.now(UTC) + timedelta(minutes=6))
        assert settled.deleted == len(difference.unexpected) > 0
        assert compare(rest_mirrored(engine, tenant), rest_truth(box.api, tenant)).summary() == EQUAL


def test_a_deletion_hidden_by_a_create_takes_nothing_for_deleted(engine: Engine) -> None:
    """The storm's second way to skip a premise: one is deleted ahead of the read while another is
    created (at the end of the premise order), so every later premise shifts back a place and the
    one at the next page's edge is never listed, yet the stated total does not drop — the listing
    looks whole. PPB has no single-record read to confirm a candidate, so the full run lists the
    premises a second time and takes for deleted only what neither listing saw: the real deletion
    is found by the next full (it had been listed before it went), the skipped premise stays
    (docs/reconcile.md)."""
    with mirrored_paged_ppb(engine, seed=8) as (api, box, tenant):
        lowest = min(api.store.live("premises"), key=lambda r: int(r.id))

        def delete_the_lowest_and_create_one(page: int) -> None:
            if page == 1:  # after the second page
                lowest.deleted, lowest.updated = True, datetime.now(UTC)
                box.churn(creates=1, updates=0, deletes=0)
        requests = box.requests
        run = full_while_changing(engine, tenant, api, delete_the_lowest_and_create_one,
                                  datetime.now(UTC) + timedelta(minutes=5))
        difference = compare(rest_mirrored(engine, tenant), rest_truth(box.api, tenant))
        assert difference.lost == [], difference.summary()  # the skipped premise was not taken for deleted
        # The deleted premise had been listed before it went: the next full finds it missing.
        assert [i for _, i, _ in difference.unexpected] == [lowest.id]
        assert (run.status, run.deleted, run.error) == ("completed", 0, None)
        assert box.requests - requests == 2 * 6  # 60 live premises, 10 a page: listed twice
        invocations: list[int] = []  # this one a page an invocation: the second listing resumes too
        settled = reconcile(engine, tenant, "full", datetime.now(UTC) + timedelta(minutes=6), invocations=invocations)
        assert (settled.status, settled.deleted, settled.inserted) == ("completed", 1, 0)
        # 12 pages; a listing's last page goes straight on to what follows (the second listing, deletions)
        assert invocations == [2 * 6 - 1]
        assert compare(rest_mirrored(engine, tenant), rest_truth(box.api, tenant)).summary() == EQUAL
        requests = box.requests
        assert reconcile(engine, tenant, "full", datetime.now(UTC) + timedelta(minutes=7)).deleted == 0
        assert box.requests - requests == 6  # nothing missing: listed once
