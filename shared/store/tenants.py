"""The tenants table: the configured tenants, mirrored so reads and runs can join on them."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from sqlalchemy import Connection, insert, select, update

from shared.settings import TenantConfig
from shared.store.schema import tenants


def sync_tenants(conn: Connection, configured: Sequence[TenantConfig]) -> None:
    """Insert or update the tenants table from configuration (secrets are never stored)."""
    now = datetime.now(timezone.utc)
    stored = {row.id: row for row in conn.execute(select(tenants))}
    for tenant in configured:
        values = {"name": tenant.name, "timezone": tenant.timezone, "enabled": tenant.enabled}
        row = stored.get(tenant.id)
        if row is None:
            conn.execute(insert(tenants).values(id=tenant.id, updated_at=now, **values))
        elif any(getattr(row, k) != v for k, v in values.items()):
            conn.execute(update(tenants).where(tenants.c.id == tenant.id).values(updated_at=now, **values))


def purge_tenant_data(conn: Connection, tenant_id: str) -> int:
    """Delete every mirrored row, run, cursor and inbox entry of one tenant; returns rows removed.

    For the local demo only, whose source (a fresh sandbox) does not outlive the process.
    """
    from sqlalchemy import delete

    from shared.store.schema import MIRRORED_TABLES, inbox, sync_cursors, sync_runs

    removed = 0
    for table in (*MIRRORED_TABLES.values(), sync_runs, sync_cursors, inbox):
        removed += conn.execute(delete(table).where(table.c.tenant_id == tenant_id)).rowcount or 0
    return removed
