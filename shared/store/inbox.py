"""The ``inbox``: one row per webhook delivery's idempotency key, kept INBOX_RETENTION, so that
exactly one copy of a delivery enqueues its changes (shared.webhooks.receive)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, update

from shared.store.engine import insert_ignore
from shared.store.schema import inbox

INBOX_RETENTION = timedelta(hours=24)


@contextmanager
def delivery_transaction(engine: Engine) -> Iterator[Connection]:
    """The transaction a delivery's claim, enqueue and record commit in: SQLite takes its write lock
    at BEGIN; PostgreSQL does not wait for the commit to reach the disk (a claim lost in a crash
    costs a harmless duplicate apply)."""
    with engine.connect() as conn, conn.execution_options(sqlite_begin="IMMEDIATE").begin():
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        yield conn


def claim_delivery(conn: Connection, tenant_id: str, key: str, event: str, now: datetime,
                   retention: timedelta = INBOX_RETENTION) -> bool:
    """Claim the delivery's idempotency key in the inbox: True for the first copy, False for a
    duplicate within the retention window. A record past its retention (not yet cleaned up) is
    claimed anew."""
    record = {"tenant_id": tenant_id, "idempotency_key": key, "event_type": event[:64], "received_at": now,
              "expires_at": now + retention}
    if insert_ignore(conn, inbox, [record]):
        return True
    c = inbox.c
    return conn.execute(update(inbox).where(c.tenant_id == tenant_id, c.idempotency_key == key,
                                            c.expires_at <= now).values(**record)).rowcount == 1


def forget_expired(conn: Connection, now: datetime) -> int:
    """Drop inbox records past their retention (the fan-out timer calls this: a delete on every
    delivery made concurrent deliveries wait for each other)."""
    return conn.execute(delete(inbox).where(inbox.c.expires_at <= now)).rowcount or 0
