"""The dashboard's statements (shared.reads.dashboard shapes their rows).

Built once, with bound parameters: building SQLAlchemy expressions on every read cost more than
running them (~60% of a dashboard's time on PostgreSQL). Every one is an index range on
(practitioner_id, tenant_id, start_at) or (…, issued_at), or a lookup by client.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from sqlalchemy import BindParameter, Connection, CursorResult, Select, and_, bindparam, case, func, select

from shared.store.schema import clients, invoices, practitioners, referrals, sessions

HELD = ("attended", "arrived")
REVENUE = ("issued", "paid")  # invoices that count: not drafts, cancelled, written off or errors
FUNDING = ("active", "completed", "on_hold")  # referrals a session can be counted against

# A statement of any columns (Select is generic over its row's column types).
AnySelect = Select[*tuple[Any, ...]]


@dataclass(frozen=True)
class _Statements:
    practitioner: AnySelect
    day: AnySelect
    history: AnySelect
    referrals: AnySelect
    counts: AnySelect
    revenue: AnySelect
    upcoming: AnySelect


@cache
def _statements() -> _Statements:
    p, s, c, i, r = practitioners.c, sessions.c, clients.c, invoices.c, referrals.c
    tenant: BindParameter[str] = bindparam("tenant")
    practitioner: BindParameter[str] = bindparam("practitioner")
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
        history=select(s.client_id, s.source_id, s.start_at, s.status, s.practitioner_id).where(
            s.tenant_id == tenant, s.client_id.in_(bindparam("clients", expanding=True)),
            s.start_at < bindparam("until"), live),
        referrals=select(r.client_id, r.source_id, r.name, r.starts_on, r.ends_on, r.session_limit, r.prior_sessions,
                         r.preferred, r.practitioner_id).where(
            r.tenant_id == tenant, r.client_id.in_(bindparam("clients", expanding=True)),
            r.status.in_(FUNDING), r.deleted_at.is_(None)),
        # One range covering both periods (a week can straddle two months).
        counts=select(*counts).where(mine, within(s.start_at, "span")),
        revenue=select(i.currency, *(func.sum(case((within(i.issued_at, name), i.total_gross)))
                                     for name in ("week", "month")))
        .where(i.tenant_id == tenant, i.practitioner_id == practitioner, within(i.issued_at, "span"),
               i.status.in_(REVENUE), i.deleted_at.is_(None)).group_by(i.currency).order_by(i.currency),
        upcoming=select(func.count(), func.count(case((s.start_at < bindparam("soon"), 1)))).where(
            mine, s.start_at >= bindparam("now"), s.status.in_(("booked", "pending"))),
    )


Statement = Literal["practitioner", "day", "history", "referrals", "counts", "revenue", "upcoming"]


def dashboard_query(conn: Connection, name: Statement, params: dict[str, Any]) -> CursorResult[*tuple[Any, ...]]:
    """Run one of the dashboard's statements with its bound values."""
    return conn.execute(getattr(_statements(), name), params)
