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
