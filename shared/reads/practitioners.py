"""The tenant's practitioners, a page at a time: how a newcomer (or a dashboard) finds an id."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from shared.store.status import practitioner_rows


def practitioner_page(conn: Connection, tenant_id: str, *, limit: int, after: str | None) -> dict[str, Any]:
    """Live practitioners ordered by id, ``limit`` of them after the id ``after`` (keyset paging:
    a page stays right while rows come and go). ``next`` is the ``after`` of the following page."""
    rows = practitioner_rows(conn, tenant_id, limit=limit + 1, after=after)
    shown = rows[:limit]
    return {"tenant": tenant_id,
            "practitioners": [{"id": r.source_id, "name": r.display_name, "active": r.active} for r in shown],
            "next": shown[-1].source_id if len(rows) > limit else None}
