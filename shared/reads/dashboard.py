"""A practitioner's dashboard for one day, read from the mirror.

Days, weeks (Monday to Sunday) and months are the tenant's local calendar: their bounds are
turned into UTC instants once, so every query is an index range on (practitioner_id,
tenant_id, start_at) or (…, issued_at). Clients appear by initials only, never by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, case, func, select

from shared.fhir.transform import session_numbers
from shared.reads.health import tenant_health
from shared.settings import TenantConfig
from shared.store.schema import clients, invoices, practitioners, sessions

HELD = ("attended", "arrived")
REVENUE = ("issued", "paid")  # invoices that count: not drafts, cancelled, written off or errors


@dataclass(frozen=True)
class Period:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive


def local_period(first: date, days: int, zone: ZoneInfo) -> Period:
    """Midnight of ``first`` to midnight ``days`` later, in the zone (DST days are 23 or 25 h)."""
    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(0), zone).astimezone(timezone.utc)
    return Period(midnight(first), midnight(first + timedelta(days=days)))


def month_days(day: date) -> tuple[date, int]:
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, (following - first).days


def practitioner_dashboard(conn: Connection, tenant: TenantConfig, practitioner_id: str, day: date,
                           now: datetime) -> dict[str, Any] | None:
    """The dashboard, or None when the tenant has no such (live) practitioner."""
    p = practitioners.c
    practitioner = conn.execute(select(p.display_name, p.active, p.last_synced_at).where(
        p.tenant_id == tenant.id, p.source_id == practitioner_id, p.deleted_at.is_(None))).first()
    if practitioner is None:
        return None
    zone = tenant.zone
    today = local_period(day, 1, zone)
    week = local_period(day - timedelta(days=day.weekday()), 7, zone)
    month = local_period(*month_days(day), zone)
    shown = _day_sessions(conn, tenant.id, practitioner_id, today, zone)
    health = tenant_health(conn, tenant, now)
    synced = [practitioner.last_synced_at, *(s.pop("_synced") for s in shown), health.last_success_at]
    last_updated = max(filter(None, synced), default=None)
    return {
        "tenant": tenant.id,
        "date": day.isoformat(),
        "timezone": tenant.timezone,
        "practitioner": {"id": practitioner_id, "name": practitioner.display_name, "active": practitioner.active},
        "sessions": shown,
        "stats": {
            "week": _period_stats(conn, tenant.id, practitioner_id, week, now),
            "month": _period_stats(conn, tenant.id, practitioner_id, month, now),
            "upcoming": _upcoming(conn, tenant.id, practitioner_id, now),
        },
        "lastUpdated": last_updated.isoformat() if last_updated else None,
        "sync": health.as_dict(),
    }


def _day_sessions(conn: Connection, tenant_id: str, practitioner_id: str, day: Period,
                  zone: ZoneInfo) -> list[dict[str, Any]]:
    s, c = sessions.c, clients.c
    rows = conn.execute(
        select(s.source_id, s.start_at, s.end_at, s.status, s.service, s.client_id, c.initials, s.last_synced_at)
        .select_from(sessions.outerjoin(clients, and_(c.tenant_id == s.tenant_id, c.source_id == s.client_id)))
        .where(s.tenant_id == tenant_id, s.practitioner_id == practitioner_id, s.start_at >= day.start,
               s.start_at < day.end, s.deleted_at.is_(None))
        .order_by(s.start_at, s.source_id)).all()
    numbers = _session_numbers(conn, tenant_id, {r.client_id for r in rows if r.client_id}, day.end)
    return [{
        "id": r.source_id,
        "start": r.start_at.astimezone(zone).isoformat(),
        "end": r.end_at.astimezone(zone).isoformat() if r.end_at else None,
        "status": r.status,
        "service": r.service,
        "clientInitials": r.initials,
        "sessionNumber": numbers.get(r.source_id),
        # CarePlan resources are not mirrored (Halaxy's webhooks do not announce them and no
        # transformer maps them yet): unknown, not zero.
        "carePlan": None,
        "_synced": r.last_synced_at,
    } for r in rows]


def _session_numbers(conn: Connection, tenant_id: str, client_ids: set[str], until: datetime) -> dict[str, int]:
    """Each session's number in its client's history (with any practitioner of the tenant)."""
    if not client_ids:
        return {}
    s = sessions.c
    history: dict[str, list[tuple[str, datetime | None, str]]] = {}
    for client_id, source_id, start_at, status in conn.execute(
            select(s.client_id, s.source_id, s.start_at, s.status).where(
                s.tenant_id == tenant_id, s.client_id.in_(sorted(client_ids)), s.start_at < until,
                s.deleted_at.is_(None))):
        history.setdefault(client_id, []).append((source_id, start_at, status))
    numbers: dict[str, int] = {}
    for visits in history.values():
        numbers.update(session_numbers(visits))
    return numbers


def _period_stats(conn: Connection, tenant_id: str, practitioner_id: str, period: Period,
                  now: datetime) -> dict[str, Any]:
    s, i = sessions.c, invoices.c
    held, cancelled, no_show, booked = conn.execute(select(
        func.count(case((s.status.in_(HELD), 1))), func.count(case((s.status == "cancelled", 1))),
        func.count(case((s.status == "no_show", 1))),
        func.count(case((and_(s.status == "booked", s.start_at >= now), 1))),
    ).where(s.tenant_id == tenant_id, s.practitioner_id == practitioner_id, s.start_at >= period.start,
            s.start_at < period.end, s.deleted_at.is_(None))).one()
    revenue = conn.execute(select(i.currency, func.sum(i.total_gross)).where(
        i.tenant_id == tenant_id, i.practitioner_id == practitioner_id, i.issued_at >= period.start,
        i.issued_at < period.end, i.status.in_(REVENUE), i.deleted_at.is_(None)).group_by(i.currency)).all()
    return {
        "from": period.start.isoformat(), "to": period.end.isoformat(),
        "sessionsHeld": held, "cancellations": cancelled, "noShows": no_show, "upcoming": booked,
        "revenue": [{"currency": currency, "amount": str(Decimal(total).quantize(Decimal("0.01")))}
                    for currency, total in revenue if total is not None],
    }


def _upcoming(conn: Connection, tenant_id: str, practitioner_id: str, now: datetime) -> dict[str, Any]:
    """Booked sessions from now on (all of them, and the next seven days)."""
    s = sessions.c
    week_ahead = now + timedelta(days=7)
    total, soon = conn.execute(select(func.count(), func.count(case((s.start_at < week_ahead, 1)))).where(
        s.tenant_id == tenant_id, s.practitioner_id == practitioner_id, s.start_at >= now,
        s.status.in_(("booked", "pending")), s.deleted_at.is_(None))).one()
    return {"booked": total, "next7Days": soon}
