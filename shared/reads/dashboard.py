"""A practitioner's dashboard for one day, read from the mirror.

Days, weeks (Monday to Sunday) and months are the tenant's local calendar: their bounds are
turned into UTC instants once, so every query is an index range on (practitioner_id,
tenant_id, start_at) or (…, issued_at). Clients appear by initials only, never by name.

The statements live in shared.store.dashboard, built once with bound parameters; this module
shapes their rows into the answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from shared.fhir.transform import COUNTED_STATUSES, session_numbers
from shared.reads.health import tenant_health
from shared.settings import TenantConfig
from shared.store.dashboard import dashboard_query


@dataclass(frozen=True)
class Period:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive


def local_period(first: date, days: int, zone: ZoneInfo) -> Period:
    """Midnight of ``first`` to midnight ``days`` later, in the zone (DST days are 23 or 25 h)."""
    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(0), zone).astimezone(UTC)
    return Period(midnight(first), midnight(first + timedelta(days=days)))


def month_days(day: date) -> tuple[date, int]:
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, (following - first).days


def practitioner_dashboard(conn: Connection, tenant: TenantConfig, practitioner_id: str, day: date,
                           now: datetime) -> dict[str, Any] | None:
    """The dashboard, or None when the tenant has no such (live) practitioner."""
    who = {"tenant": tenant.id, "practitioner": practitioner_id}
    practitioner = dashboard_query(conn, "practitioner", who).first()
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
        "stats": {**_period_stats(conn, who, week, month, now, zone), "upcoming": _upcoming(conn, who, now)},
        "lastUpdated": last_updated.isoformat() if last_updated else None,
        "sync": health.as_dict(),
    }


def _day_sessions(conn: Connection, who: dict[str, str], day: Period, zone: ZoneInfo) -> list[dict[str, Any]]:
    rows = dashboard_query(conn, "day", {**who, "day_start": day.start, "day_end": day.end}).all()
    history = _history(conn, who["tenant"], {r.client_id for r in rows if r.client_id}, day.end)
    numbers: dict[str, int] = {}
    for visits in history.values():
        numbers.update(session_numbers((v.source_id, v.start_at, v.status) for v in visits))
    plans = _care_plans(conn, who["tenant"], history, zone)
    return [{
        "id": r.source_id,
        "start": r.start_at.astimezone(zone).isoformat(),
        "end": r.end_at.astimezone(zone).isoformat() if r.end_at else None,
        "status": r.status,
        "service": r.service,
        "clientInitials": r.initials,
        "sessionNumber": numbers.get(r.source_id),
        "carePlan": plans.get(r.source_id),
        "_synced": r.last_synced_at,
    } for r in rows]


def _history(conn: Connection, tenant_id: str, client_ids: set[str], until: datetime) -> dict[str, list[Any]]:
    """The clients' sessions (with any practitioner of the tenant) before ``until``, by client."""
    history: dict[str, list[Any]] = {client_id: [] for client_id in client_ids}
    if client_ids:
        for row in dashboard_query(conn, "history",
                                   {"tenant": tenant_id, "clients": sorted(client_ids), "until": until}):
            history[row.client_id].append(row)
    return history


def _care_plans(conn: Connection, tenant_id: str, history: dict[str, list[Any]],
                zone: ZoneInfo) -> dict[str, dict[str, Any]]:
    """Each session's referral (care plan) and the sessions it has used up to and including this one.

    The clients' sessions are counted in start order against the referral Halaxy would pick:
    valid on the session's local date, assigned to its practitioner or to nobody, not used up;
    the preferred one first, then one assigned to the practitioner, then the most recent. A
    referral starts at its prior appointments; booked, arrived and attended sessions use one,
    cancelled ones and no-shows do not. When every valid referral is used up, the session is
    counted against the first of them (sessionsUsed then exceeds sessionsTotal: worth seeing).
    """
    if not history:
        return {}
    plans: dict[str, list[Any]] = {}
    for row in dashboard_query(conn, "referrals", {"tenant": tenant_id, "clients": sorted(history)}):
        plans.setdefault(row.client_id, []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for client_id, referrals_ in plans.items():
        used = {r.source_id: r.prior_sessions or 0 for r in referrals_}
        for visit in sorted((v for v in history[client_id] if v.start_at), key=lambda v: (v.start_at, v.source_id)):
            day = visit.start_at.astimezone(zone).date()
            valid = [r for r in referrals_ if (r.starts_on is None or r.starts_on <= day)
                     and (r.ends_on is None or day <= r.ends_on)
                     and r.practitioner_id in (None, visit.practitioner_id)]
            if not valid:
                continue
            valid.sort(key=lambda r: (not r.preferred, r.practitioner_id is None,
                                      -(r.starts_on.toordinal() if r.starts_on else 0), r.source_id))
            plan = next((r for r in valid if r.session_limit is None or used[r.source_id] < r.session_limit), valid[0])
            if visit.status in COUNTED_STATUSES:
                used[plan.source_id] += 1
            out[visit.source_id] = {
                "referral": plan.source_id, "name": plan.name, "sessionsUsed": used[plan.source_id],
                "sessionsTotal": plan.session_limit,
                "validUntil": plan.ends_on.isoformat() if plan.ends_on else None,
            }
    return out


def _period_stats(conn: Connection, who: dict[str, str], week: Period, month: Period,
                  now: datetime, zone: ZoneInfo) -> dict[str, dict[str, Any]]:
    periods = {"week": week, "month": month}
    bounds: dict[str, Any] = {**who, "now": now, "span_start": min(week.start, month.start),
                              "span_end": max(week.end, month.end)}
    for name, period in periods.items():
        bounds |= {f"{name}_start": period.start, f"{name}_end": period.end}
    row = dashboard_query(conn, "counts", bounds).one()
    revenue = dashboard_query(conn, "revenue", bounds).all()
    out = {}
    for n, (name, period) in enumerate(periods.items()):
        held, cancelled, no_show, booked = row[4 * n:4 * n + 4]
        out[name] = {
            # In the practice's zone, as its sessions are: the week starts at its Monday midnight.
            "from": period.start.astimezone(zone).isoformat(), "to": period.end.astimezone(zone).isoformat(),
            "sessionsHeld": held, "cancellations": cancelled, "noShows": no_show, "upcoming": booked,
            "revenue": [{"currency": r[0], "amount": str(Decimal(r[1 + n]).quantize(Decimal("0.01")))}
                        for r in revenue if r[1 + n] is not None],
        }
    return out


def _upcoming(conn: Connection, who: dict[str, str], now: datetime) -> dict[str, Any]:
    """Booked or pending sessions from now on (all of them, and the next seven days)."""
    total, soon = dashboard_query(conn, "upcoming", {**who, "now": now, "soon": now + timedelta(days=7)}).one()
    return {"booked": total, "next7Days": soon}
