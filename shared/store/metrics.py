"""The ``tenant_metrics`` table: one counter row per (tenant, name), added to in one statement per
dialect, pruned of old per-minute and per-hour webhook counts, and read for the status page and
tests. The in-memory batching in front of it is shared.metrics."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from shared.store.schema import tenant_metrics

MINUTE_PREFIX = "webhook.minute."
HOUR_PREFIX = "webhook.hour."
RATE_MINUTES = 15

_MSSQL_MERGE = text(
    "MERGE tenant_metrics WITH (HOLDLOCK) AS t "
    "USING (VALUES (:tenant_id, :name, :value, :updated_at)) AS s (tenant_id, name, value, updated_at) "
    "ON t.tenant_id = s.tenant_id AND t.name = s.name "
    "WHEN MATCHED THEN UPDATE SET value = t.value + s.value, updated_at = s.updated_at "
    "WHEN NOT MATCHED THEN INSERT (tenant_id, name, value, updated_at) "
    "VALUES (s.tenant_id, s.name, s.value, s.updated_at);")


def increment(conn: Connection, counts: Mapping[tuple[str, str], int], now: datetime) -> None:
    rows = [{"tenant_id": t, "name": n, "value": v, "updated_at": now} for (t, n), v in sorted(counts.items())]
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(tenant_metrics)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["tenant_id", "name"],
            set_={"value": tenant_metrics.c.value + stmt.excluded.value, "updated_at": stmt.excluded.updated_at}),
            rows)
    elif dialect == "mssql":
        conn.execute(_MSSQL_MERGE, rows)
    else:
        raise ValueError(f"metrics do not support the {dialect!r} dialect")


def prune_minutes(conn: Connection, before: datetime) -> int:
    """Drop per-minute webhook counts last written before ``before`` (every tenant's)."""
    return _prune(conn, MINUTE_PREFIX, before)


def prune_hours(conn: Connection, before: datetime) -> int:
    """Drop per-hour webhook counts last written before ``before`` (every tenant's)."""
    return _prune(conn, HOUR_PREFIX, before)


def _prune(conn: Connection, prefix: str, before: datetime) -> int:
    c = tenant_metrics.c
    return conn.execute(delete(tenant_metrics).where(
        c.name.startswith(prefix, autoescape=True), c.updated_at < before)).rowcount or 0


def webhook_hours(conn: Connection, tenant_id: str, now: datetime, hours: int = 24) -> list[tuple[datetime, int]]:
    """Deliveries in the current hour and the ``hours - 1`` before it, oldest first: (hour start, count)."""
    c = tenant_metrics.c
    current = int(now.timestamp()) // 3600
    wanted = range(current - hours + 1, current + 1)
    found = dict(conn.execute(select(c.name, c.value).where(
        c.tenant_id == tenant_id, c.name.in_([f"{HOUR_PREFIX}{h}" for h in wanted]))).all())
    return [(datetime.fromtimestamp(h * 3600, UTC), int(found.get(f"{HOUR_PREFIX}{h}", 0))) for h in wanted]


def webhook_rate(conn: Connection, tenant_id: str, now: datetime, minutes: int = RATE_MINUTES) -> float:
    """Deliveries per minute over the last ``minutes`` minutes, the current one included."""
    c = tenant_metrics.c
    current = int(now.timestamp()) // 60
    names = [f"{MINUTE_PREFIX}{m}" for m in range(current - minutes + 1, current + 1)]
    total = conn.execute(select(func.coalesce(func.sum(c.value), 0)).where(
        c.tenant_id == tenant_id, c.name.in_(names))).scalar_one()
    return int(total) / minutes


def read_metrics(conn: Connection, tenant_id: str) -> dict[str, int]:
    c = tenant_metrics.c
    return {name: int(value) for name, value in conn.execute(
        select(c.name, c.value).where(c.tenant_id == tenant_id).order_by(c.name))}
