"""A declared table's unique columns (HIE's facility codes), enforced: a listing or an event that
would repeat one writes nothing of it, the run fails naming the values and records (and stays
blocked on every run), until the source fixes them; a code moving between two records of one
page is not a repeat. The HIE sandbox over HTTP, the sample tenant, SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from devtools.compare import compare, rest_mirrored, rest_truth
from devtools.sandbox.rest.apis import build_api
from devtools.sandbox.rest.server import RestConfig, RestSandbox
from shared.queues.messages import ChangeMessage
from shared.settings import TenantConfig, parse_tenants
from shared.source.breaker import MemoryBreakerStore
from shared.source.errors import DuplicateKeys
from shared.source.registry import SourceRegistry
from shared.store.declared import declare, ensure_tables, find_table
from shared.sync.apply import apply_change
from tests.integration.test_rest_sources import latest_run, reconcile

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def hie(engine: Engine) -> Iterator[tuple[RestSandbox, TenantConfig]]:
    box = RestSandbox(build_api("hie-facilities", seed=9, records=60, anchor=NOW), RestConfig(rate_limit=0)).start()
    text = (ROOT / "samples" / "tenants.hie-facilities.json").read_text()
    (tenant,) = parse_tenants(text.replace("127.0.0.1:7072", f"127.0.0.1:{box.port}"), source="sample")
    ensure_tables(engine, declare([tenant.rest_spec()]), lambda line: None)
    yield box, tenant
    box.stop()


def sync(engine: Engine, tenant: TenantConfig, kind: str) -> Any:
    """Run a reconcile to its end; the run's row (status, error) — a blocked run raises
    DuplicateKeys after recording it."""
    with contextlib.suppress(DuplicateKeys):
        reconcile(engine, tenant, kind, datetime.now(UTC) + timedelta(seconds=2))
    return latest_run(engine, tenant.id)


def change(box: RestSandbox, rid: str, **fields: Any) -> dict[str, Any]:
    """Change a facility at the source, as the registry's own edits would (a new lastUpdated)."""
    store = box.api.store
    rec = store.entities["facilities"][rid]
    at = store.now() + timedelta(seconds=1)
    rec.record = {**rec.record, **fields, "lastUpdated": at.strftime("%Y-%m-%d %H:%M:%S")}
    rec.updated = at
    return rec.record


def codes(engine: Engine, tenant: TenantConfig) -> dict[str, str]:
    table = find_table("facilities")
    with engine.connect() as conn:
        return dict(conn.execute(select(table.c.source_id, table.c.facility_code).where(
            table.c.tenant_id == tenant.id, table.c.deleted_at.is_(None))).all())


def test_repeated_facility_codes_block_the_sync_until_the_source_fixes_them(
        engine: Engine, hie: tuple[RestSandbox, TenantConfig]) -> None:
    box, tenant = hie
    assert sync(engine, tenant, "full").status == "completed"
    before = codes(engine, tenant)
    first, second, third = sorted(before)[:3]
    # Two records take one code: one already stored (second takes first's), within the same page.
    change(box, second, facilityCode=before[first], name="Renamed by the registry")
    change(box, third, kephLevel=9)  # an innocent change on the same page
    for kind in ("incremental", "full"):
        run = sync(engine, tenant, kind)
        assert run.status == "failed", kind
        assert f"facility_code={before[first]!r} on {first} and {second}" in run.error, run.error
        assert "nothing from this page was written" in run.error and "blocked" in run.error
        assert codes(engine, tenant) == before  # nothing of the page: not the repeat, not the innocent change
    # An event carrying the repeat is refused the same way, and changes nothing.
    result = asyncio.run(_apply(engine, tenant, second, box.api.store.entities["facilities"][second].record))
    assert (result.outcome, result.counts.written) == ("duplicate-key", 0)
    assert f"facility_code={before[first]!r} on {first} and {second}" in (result.reason or "")
    assert codes(engine, tenant) == before
    # The registry fixes it by giving the first record a new code: the code moved between two
    # records of one page, which is not a repeat. The sync resumes and the mirror equals the source.
    change(box, first, facilityCode="99999")
    assert sync(engine, tenant, "incremental").status == "completed"
    after = codes(engine, tenant)
    assert (after[first], after[second]) == ("99999", before[first])
    assert compare(rest_mirrored(engine, tenant), rest_truth(box.api, tenant)).equal


async def _apply(engine: Engine, tenant: TenantConfig, rid: str, record: dict[str, Any]) -> Any:
    async with httpx.AsyncClient() as http:
        source = SourceRegistry(http, MemoryBreakerStore()).source(tenant)
        message = ChangeMessage(tenant=tenant.id, type="facilities", id=rid, action="update", data=record,
                                event_at=datetime.now(UTC))
        return await apply_change(engine, source, message)
