"""The demo's restart clears everything its last sandbox left, and nothing of any other tenant."""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, func, insert, select

from shared.settings import TenantConfig
from shared.store.engine import write_transaction
from shared.store.schema import clients, sync_runs, sync_seen, tenant_metrics, tenants, webhook_events
from shared.store.tenants import purge_tenant_data, sync_tenants

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def leave_traces(conn: object, tenant: str) -> None:
    run = f"run-{tenant}"
    for statement in (
            insert(clients).values(tenant_id=tenant, source_id="PT-1", source_updated_at=NOW, content_hash="0" * 32,
                                   last_synced_at=NOW),
            insert(sync_runs).values(id=run, tenant_id=tenant, kind="full", status="completed", started_at=NOW),
            insert(sync_seen).values(run_id=run, resource_type="Patient", source_id="PT-1"),
            insert(tenant_metrics).values(tenant_id=tenant, name="webhook.enqueued", value=48, updated_at=NOW),
            insert(webhook_events).values(tenant_id=tenant, subscription="s", event_number=1, received_at=NOW)):
        conn.execute(statement)  # type: ignore[attr-defined]  # the tuple's items are all Insert


def counts(engine: Engine, tenant: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t).where(
                    (t.c.run_id == f"run-{tenant}") if t is sync_seen else (t.c.tenant_id == tenant))).scalar_one()
                for t in (clients, sync_runs, sync_seen, tenant_metrics, webhook_events)}


def test_purging_the_demo_clears_its_counters_and_webhook_book_too(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        sync_tenants(conn, [TenantConfig(id=t, name=t, fhir_base_url="http://127.0.0.1:9/main", client_id="c",
                                         client_secret="s") for t in ("demo", "other")])
        leave_traces(conn, "demo")
        leave_traces(conn, "other")
    with write_transaction(engine) as conn:
        assert purge_tenant_data(conn, "demo") == 5
    assert set(counts(engine, "demo").values()) == {0}
    assert set(counts(engine, "other").values()) == {1}
    with engine.connect() as conn:  # the tenant itself stays configured
        assert conn.execute(select(func.count()).select_from(tenants)).scalar_one() == 2
