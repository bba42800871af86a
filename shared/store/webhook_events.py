"""Gaps in a FHIR Subscriptions Backport stream: events the source numbered but never delivered.

Every Backport notification carries its subscription, ``eventsSinceSubscriptionStart`` and the
numbers of the events it holds (a heartbeat holds none but still says how many there were). The
receiver records them (``record_notification``); the fan-out timer settles each subscription
(``settle_gaps``): numbers up to the highest known that were not delivered within a grace period
(senders retry and deliver out of order) are a gap. A gap is counted and answered with an
incremental reconcile of that tenant and the subscription's resource types, so the missed change
arrives by polling minutes later instead of at the next scheduled run.

The store's side of it (the ``webhook_subscriptions`` and ``webhook_events`` tables): no
network here; the caller enqueues what ``settle_gaps`` returns.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, select, update

from shared.store.engine import insert_ignore
from shared.store.schema import webhook_events, webhook_subscriptions


@dataclass(frozen=True)
class Gap:
    subscription: str
    resource_types: tuple[str, ...]
    missing: int


def record_notification(conn: Connection, tenant_id: str, subscription: str | None, event_numbers: Sequence[int],
                        events_since_start: int | None, types: set[str], now: datetime) -> None:
    """Remember which event numbers arrived and the highest number the source announced.

    Deliveries only insert their event numbers (their own rows: concurrent deliveries never wait
    for each other); the subscription's row is written the first time, and after that only by
    what is rare — a heartbeat or a count beyond the events delivered, a new resource type."""
    if not subscription:
        return
    subscription = subscription[:200]
    s = webhook_subscriptions.c
    key = and_(s.tenant_id == tenant_id, s.subscription == subscription)
    row = conn.execute(select(s.highest_event, s.checked_through, s.resource_types).where(key)).first()
    highest = max([*event_numbers, events_since_start or 0])
    if row is None:
        # The first notification we see: numbers before it are history, not a gap.
        checked = max(min(event_numbers, default=highest + 1) - 1, 0)
        if not insert_ignore(conn, webhook_subscriptions, [{
                "tenant_id": tenant_id, "subscription": subscription, "resource_types": _types(set(), types),
                "highest_event": highest, "checked_through": checked, "gap_seen_at": None, "gap_through": None,
                "gaps": 0, "last_event_at": now}]):
            # Another delivery of the same subscription got there first: go on from its row.
            row = conn.execute(select(s.highest_event, s.checked_through, s.resource_types).where(key)).first()
    if row is not None:
        checked = row.checked_through
        known = set(row.resource_types.split())
        if (events_since_start or 0) > max([row.highest_event, *event_numbers]) or not types <= known:
            conn.execute(update(webhook_subscriptions).where(key).values(
                highest_event=case((s.highest_event < highest, highest), else_=s.highest_event),
                last_event_at=now, resource_types=_types(known, types)))
    insert_ignore(conn, webhook_events, [  # a redelivery's numbers are there already
        {"tenant_id": tenant_id, "subscription": subscription, "event_number": n, "received_at": now}
        for n in sorted(set(event_numbers)) if n > checked])


def settle_gaps(conn: Connection, tenant_id: str, now: datetime, grace: timedelta) -> list[Gap]:
    """Settle every subscription of the tenant; returns the gaps confirmed now.

    Missing numbers are first only noticed (with the highest number known then); a grace period
    later, those still missing up to that number are a gap. Numbers delivered meanwhile, even
    out of order, settle without one."""
    s, e = webhook_subscriptions.c, webhook_events.c
    delivered_max = dict(conn.execute(
        select(e.subscription, func.max(e.event_number)).where(e.tenant_id == tenant_id).group_by(e.subscription)).all())
    found = []
    for sub in conn.execute(select(webhook_subscriptions).where(s.tenant_id == tenant_id)).all():
        key = and_(s.tenant_id == tenant_id, s.subscription == sub.subscription)
        highest = max(sub.highest_event, delivered_max.get(sub.subscription) or 0)
        if highest <= sub.checked_through:
            continue
        if highest > sub.highest_event:
            conn.execute(update(webhook_subscriptions).where(key).values(highest_event=highest))
        if sub.gap_seen_at is None:
            if _missing(conn, tenant_id, sub.subscription, sub.checked_through, highest) == 0:
                _settle(conn, key, sub, through=highest, missing=0)
            else:
                conn.execute(update(webhook_subscriptions).where(key).values(gap_seen_at=now, gap_through=highest))
        elif now - sub.gap_seen_at >= grace:
            missing = _missing(conn, tenant_id, sub.subscription, sub.checked_through, sub.gap_through)
            if missing:
                found.append(Gap(sub.subscription, tuple(sub.resource_types.split()), missing))
            _settle(conn, key, sub, through=sub.gap_through, missing=missing)
    return found


def _missing(conn: Connection, tenant_id: str, subscription: str, after: int, through: int) -> int:
    e = webhook_events.c
    delivered = conn.execute(select(func.count()).where(
        e.tenant_id == tenant_id, e.subscription == subscription, e.event_number > after,
        e.event_number <= through)).scalar_one()
    return max(through - after - delivered, 0)


def _settle(conn: Connection, key: Any, sub: Any, *, through: int, missing: int) -> None:
    e = webhook_events.c
    conn.execute(update(webhook_subscriptions).where(key).values(
        checked_through=through, gap_seen_at=None, gap_through=None, gaps=sub.gaps + missing))
    conn.execute(delete(webhook_events).where(e.tenant_id == sub.tenant_id, e.subscription == sub.subscription,
                                              e.event_number <= through))


def _types(known: set[str], new: set[str]) -> str:
    return " ".join(sorted(known | new))[:200]
