"""The tenant's practitioners, a page at a time: how a newcomer (or a dashboard) finds an id."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from shared.store.schema import practitioners


def practitioner_page(conn: Connection, tenant_id: str, *, limit: int, after: str | None) -> dict[str, Any]:
    """Live practitioners ordered by id, ``limit`` of them after the id ``after`` (keyset paging:
    a page stays right while rows come and go). ``next`` is the ``after`` of the following page."""
    p = practitioners.c
    query = (select(p.source_id, p.display_name, p.active)
             .where(p.tenant_id == tenant_id, p.deleted_at.is_(None))
             .order_by(p.source_id).limit(limit + 1))
    if after is not None:
        query = query.where(p.source_id > after)
    rows = conn.execute(query).all()
    shown = rows[:limit]
    return {"tenant": tenant_id,
            "practitioners": [{"id": r.source_id, "name": r.display_name, "active": r.active} for r in shown],
            "next": shown[-1].source_id if len(rows) > limit else None}
