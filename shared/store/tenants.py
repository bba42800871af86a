"""The tenants table: the configured tenants, mirrored so reads and runs can join on them."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, insert, select, update

from shared.settings import TenantConfig
from shared.store.schema import metadata, sync_runs, sync_seen, tenants


def sync_tenants(conn: Connection, configured: Sequence[TenantConfig]) -> None:
    """Insert or update the tenants table from configuration (secrets are never stored)."""
    now = datetime.now(UTC)
    stored = {row.id: row for row in conn.execute(select(tenants))}
    for tenant in configured:
        values = {"name": tenant.name, "timezone": tenant.timezone, "enabled": tenant.enabled}
        row = stored.get(tenant.id)
        if row is None:
            conn.execute(insert(tenants).values(id=tenant.id, updated_at=now, **values))
        elif any(getattr(row, k) != v for k, v in values.items()):
            conn.execute(update(tenants).where(tenants.c.id == tenant.id).values(updated_at=now, **values))


def purge_tenant_data(conn: Connection, tenant_id: str) -> int:
    """Delete everything one tenant left: mirrored rows, runs (and the ids they saw), cursors, inbox,
    counters and webhook bookkeeping; returns rows removed. The tenant's row itself stays.

    For the local demo only, whose source (a fresh sandbox) does not outlive the process: counters
    of the last demo beside an empty mirror would read as this demo's webhooks.
    """
    runs = select(sync_runs.c.id).where(sync_runs.c.tenant_id == tenant_id)
    removed = conn.execute(delete(sync_seen).where(sync_seen.c.run_id.in_(runs))).rowcount or 0
    for table in metadata.sorted_tables:
        if table is not tenants and "tenant_id" in table.c:
            removed += conn.execute(delete(table).where(table.c.tenant_id == tenant_id)).rowcount or 0
    return removed
