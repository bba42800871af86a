"""Silent webhooks: changes a reconcile had to bring in although webhooks announce their type.

When webhooks work, the apply function has already stored a change by the time a reconcile reads
it, and the reconcile finds it unchanged. A change the reconcile *writes* — of a type the tenant's
webhooks cover, made since the last sync (at or after the type's watermark) and older than the
grace period (a webhook had time to arrive and be applied) — was not brought by a webhook: the
subscription is probably broken, or its deliveries are failing. It is recorded per tenant and
type in ``webhook_silence`` (for the status page; shared.store.silence writes it) and counted as
``webhook.silent_changes``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.settings import TenantConfig


@dataclass(frozen=True)
class SilenceCheck:
    types: frozenset[str]
    cutoff: datetime  # changes last updated before this should have come by webhook


def silence_check(tenant: TenantConfig, grace_seconds: float, now: datetime) -> SilenceCheck | None:
    """The check for a reconcile of ``tenant`` starting ``now``; None without webhooks."""
    if not tenant.webhook_secrets or not tenant.webhook_types:
        return None
    return SilenceCheck(frozenset(tenant.webhook_types), now - timedelta(seconds=grace_seconds))
