"""Named leases: one holder at a time for work that must not run twice at once (a poison re-drive).

A lease expires on its own, so a holder that dies frees it after ``ttl``; taking one is a single
insert, or an update of an expired row, decided by the database.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, update

from shared.store.engine import insert_ignore
from shared.store.schema import leases


def take_lease(conn: Connection, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """True when ``holder`` now holds ``name`` until ``now + ttl``; False while another holds it."""
    row = {"name": name, "holder": holder, "fencing_token": 1, "expires_at": now + ttl}
    if insert_ignore(conn, leases, [row]):
        return True
    c = leases.c
    return conn.execute(update(leases).where(c.name == name, c.expires_at <= now).values(
        holder=holder, expires_at=now + ttl, fencing_token=c.fencing_token + 1)).rowcount == 1


def drop_lease(conn: Connection, name: str, holder: str) -> None:
    conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))
