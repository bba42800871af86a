"""The ``webhook_silence`` table: changes a reconcile brought in that the tenant's webhooks should
have announced (shared.sync.silence says which; this records them)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, case, update

from shared.store.engine import insert_ignore
from shared.store.metrics import increment
from shared.store.schema import webhook_silence


def record_silence(conn: Connection, tenant_id: str, run_id: str, resource_type: str,
                   written: list[tuple[str, str, datetime]], since: datetime | None, cutoff: datetime,
                   now: datetime) -> int:
    """Record the missed changes among the rows a reconcile page wrote; returns how many."""
    if since is None:
        return 0  # never synced before: everything is new, nothing was missed
    missed = [at for _table, _id, at in written if since <= at < cutoff]
    if not missed:
        return 0
    w = webhook_silence.c
    newest = max(missed)
    if not insert_ignore(conn, webhook_silence, [{
            "tenant_id": tenant_id, "resource_type": resource_type, "changes": len(missed), "first_seen_at": now,
            "last_seen_at": now, "last_run_id": run_id, "last_change_at": newest}]):
        # Recorded before (by this run or another): add to it in one statement, no read first.
        conn.execute(update(webhook_silence).where(w.tenant_id == tenant_id, w.resource_type == resource_type)
                     .values(changes=w.changes + len(missed), last_seen_at=now, last_run_id=run_id,
                             last_change_at=case((w.last_change_at < newest, newest), else_=w.last_change_at)))
    increment(conn, {(tenant_id, "webhook.silent_changes"): len(missed)}, now)
    return len(missed)
