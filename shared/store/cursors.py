"""Watermarks per (tenant, resource type): where the next incremental window starts.

A watermark moves only after a whole window committed, in the same transaction as the window's
last page, so a crash can repeat a window (harmless: the upsert is idempotent) but never skip one.
"""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from shared.store.schema import sync_cursors


def watermark(conn: Connection, tenant_id: str, resource_type: str) -> datetime | None:
    c = sync_cursors.c
    return conn.execute(select(c.watermark).where(c.tenant_id == tenant_id, c.resource_type == resource_type)).scalar()


def advance(conn: Connection, tenant_id: str, resource_type: str, to: datetime) -> None:
    """Move the watermark forward to ``to``; never backwards."""
    c = sync_cursors.c
    now = datetime.now(UTC)
    current = watermark(conn, tenant_id, resource_type)
    if current is None:
        exists = conn.execute(select(c.tenant_id).where(c.tenant_id == tenant_id, c.resource_type == resource_type)).first()
        if exists is None:
            conn.execute(insert(sync_cursors).values(tenant_id=tenant_id, resource_type=resource_type, watermark=to,
                                                     updated_at=now))
            return
    if current is not None and current >= to:
        return
    conn.execute(update(sync_cursors).where(c.tenant_id == tenant_id, c.resource_type == resource_type)
                 .values(watermark=to, updated_at=now))
