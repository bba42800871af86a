"""Silent webhooks: changes a reconcile had to bring in although webhooks announce their type.

When webhooks work, the apply function has already stored a change by the time a reconcile reads
it, and the reconcile finds it unchanged. A change the reconcile *writes* — of a type the tenant's
webhooks cover, made since the last sync (at or after the type's watermark) and older than the
grace period (a webhook had time to arrive and be applied) — was not brought by a webhook: the
subscription is probably broken, or its deliveries are failing. It is recorded per tenant and
type in ``webhook_silence`` (for the status page) and counted as ``webhook.silent_changes``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, update

from shared.metrics import increment
from shared.settings import TenantConfig
from shared.store.engine import insert_ignore
from shared.store.schema import webhook_silence


@dataclass(frozen=True)
class SilenceCheck:
    types: frozenset[str]
    cutoff: datetime  # changes last updated before this should have come by webhook


def silence_check(tenant: TenantConfig, grace_seconds: float, now: datetime) -> SilenceCheck | None:
    """The check for a reconcile of ``tenant`` starting ``now``; None without webhooks."""
    if not tenant.webhook_secrets or not tenant.webhook_types:
        return None
    return SilenceCheck(frozenset(tenant.webhook_types), now - timedelta(seconds=grace_seconds))


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
