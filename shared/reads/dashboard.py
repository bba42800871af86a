"""A practitioner's dashboard for one day, read from the mirror.

Days, weeks (Monday to Sunday) and months are the tenant's local calendar: their bounds are
turned into UTC instants once, so every query is an index range on (practitioner_id,
tenant_id, start_at) or (…, issued_at). Clients appear by initials only, never by name.

The statements are built once, with bound parameters: building SQLAlchemy expressions on every
read cost more than running them (~60% of a dashboard's time on PostgreSQL).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Select, and_, bindparam, case, func, select

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
    q = _statements()
    who = {"tenant": tenant.id, "practitioner": practitioner_id}
    practitioner = conn.execute(q.practitioner, who).first()
    if practitioner is None:
        return None
    zone = tenant.zone
    today = local_period(day, 1, zone)
    week = local_period(day - timedelta(days=day.weekday()), 7, zone)
    month = local_period(*month_days(day), zone)
    shown = _day_sessions(conn, who, today, zone)
    health = tenant_health(conn, tenant, now)
    synced = [practitioner.last_synced_at, *(s.pop("_synced") for s in shown), health.last_success_at]
    last_updated = max(filter(None, synced), default=None)
    return {
        "tenant": tenant.id,
        "date": day.isoformat(),
        "timezone": tenant.timezone,
        "practitioner": {"id": practitioner_id, "name": practitioner.display_name, "active": practitioner.active},
        "sessions": shown,
        "stats": {**_period_stats(conn, who, week, month, now), "upcoming": _upcoming(conn, who, now)},
        "lastUpdated": last_updated.isoformat() if last_updated else None,
        "sync": health.as_dict(),
    }


@dataclass(frozen=True)
class _Statements:
    practitioner: Select[Any]
    day: Select[Any]
    history: Select[Any]
    counts: Select[Any]
    revenue: Select[Any]
    upcoming: Select[Any]


@cache
def _statements() -> _Statements:
    p, s, c, i = practitioners.c, sessions.c, clients.c, invoices.c
    tenant, practitioner = bindparam("tenant"), bindparam("practitioner")
    live = s.deleted_at.is_(None)
    mine = and_(s.tenant_id == tenant, s.practitioner_id == practitioner, live)

    def within(column: Any, name: str) -> Any:
        return and_(column >= bindparam(f"{name}_start"), column < bindparam(f"{name}_end"))

    counts = []
    for name in ("week", "month"):  # held, cancelled, no-show, booked still ahead
        inside = within(s.start_at, name)
        counts += [func.count(case((and_(inside, s.status.in_(HELD)), 1))),
                   func.count(case((and_(inside, s.status == "cancelled"), 1))),
                   func.count(case((and_(inside, s.status == "no_show"), 1))),
                   func.count(case((and_(inside, s.status == "booked", s.start_at >= bindparam("now")), 1)))]
    return _Statements(
        practitioner=select(p.display_name, p.active, p.last_synced_at).where(
            p.tenant_id == tenant, p.source_id == practitioner, p.deleted_at.is_(None)),
        day=select(s.source_id, s.start_at, s.end_at, s.status, s.service, s.client_id, c.initials, s.last_synced_at)
        .select_from(sessions.outerjoin(clients, and_(c.tenant_id == s.tenant_id, c.source_id == s.client_id)))
        .where(mine, within(s.start_at, "day")).order_by(s.start_at, s.source_id),
        history=select(s.client_id, s.source_id, s.start_at, s.status).where(
            s.tenant_id == tenant, s.client_id.in_(bindparam("clients", expanding=True)),
            s.start_at < bindparam("until"), live),
        # One range covering both periods (a week can straddle two months).
        counts=select(*counts).where(mine, within(s.start_at, "span")),
        revenue=select(i.currency, *(func.sum(case((within(i.issued_at, name), i.total_gross)))
                                     for name in ("week", "month")))
        .where(i.tenant_id == tenant, i.practitioner_id == practitioner, within(i.issued_at, "span"),
               i.status.in_(REVENUE), i.deleted_at.is_(None)).group_by(i.currency).order_by(i.currency),
        upcoming=select(func.count(), func.count(case((s.start_at < bindparam("soon"), 1)))).where(
            mine, s.start_at >= bindparam("now"), s.status.in_(("booked", "pending"))),
    )


def _day_sessions(conn: Connection, who: dict[str, str], day: Period, zone: ZoneInfo) -> list[dict[str, Any]]:
    rows = conn.execute(_statements().day, {**who, "day_start": day.start, "day_end": day.end}).all()
    numbers = _session_numbers(conn, who["tenant"], {r.client_id for r in rows if r.client_id}, day.end)
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
    history: dict[str, list[tuple[str, datetime | None, str]]] = {}
    for client_id, source_id, start_at, status in conn.execute(
            _statements().history, {"tenant": tenant_id, "clients": sorted(client_ids), "until": until}):
        history.setdefault(client_id, []).append((source_id, start_at, status))
    numbers: dict[str, int] = {}
    for visits in history.values():
        numbers.update(session_numbers(visits))
    return numbers


def _period_stats(conn: Connection, who: dict[str, str], week: Period, month: Period,
                  now: datetime) -> dict[str, dict[str, Any]]:
    periods = {"week": week, "month": month}
    bounds: dict[str, Any] = {**who, "now": now, "span_start": min(week.start, month.start),
                              "span_end": max(week.end, month.end)}
    for name, period in periods.items():
        bounds |= {f"{name}_start": period.start, f"{name}_end": period.end}
    q = _statements()
    row = conn.execute(q.counts, bounds).one()
    revenue = conn.execute(q.revenue, bounds).all()
    out = {}
    for n, (name, period) in enumerate(periods.items()):
        held, cancelled, no_show, booked = row[4 * n:4 * n + 4]
        out[name] = {
            "from": period.start.isoformat(), "to": period.end.isoformat(),
            "sessionsHeld": held, "cancellations": cancelled, "noShows": no_show, "upcoming": booked,
            "revenue": [{"currency": r[0], "amount": str(Decimal(r[1 + n]).quantize(Decimal("0.01")))}
                        for r in revenue if r[1 + n] is not None],
        }
    return out


def _upcoming(conn: Connection, who: dict[str, str], now: datetime) -> dict[str, Any]:
    """Booked or pending sessions from now on (all of them, and the next seven days)."""
    total, soon = conn.execute(_statements().upcoming, {**who, "now": now, "soon": now + timedelta(days=7)}).one()
    return {"booked": total, "next7Days": soon}
