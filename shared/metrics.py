"""Counters per tenant: what the webhook door and the apply side did, and how late rows landed.

Each process adds to an in-memory batch and writes it at most once a second (``maybe_flush``):
every delivery writing its own counter row would queue a tenant's deliveries behind one row lock
and put a database write in front of every 401. A crash loses at most that second of counts —
counts only, never a change. The table holds one row per (tenant, name); names are fixed strings
built here, never request input, so a flood of forged deliveries cannot grow it.

Lag (event timestamp → row committed) is kept as a histogram of fixed buckets (``lag.le_<ms>``)
plus ``lag.count`` and ``lag.sum_ms``, enough for percentiles to a bucket's precision.

Webhook deliveries are also counted per minute (``webhook.minute.<minutes since 1970>``) for the
rate on the status page, and per hour (``webhook.hour.<hours since 1970>``) for its 24-hour chart;
a flush drops minutes older than an hour and hours older than a day and an hour, at most every
five minutes, so a tenant has at most ~65 + ~26 of these rows.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, func, select, text

from shared.store.engine import write_transaction
from shared.store.schema import tenant_metrics

log = logging.getLogger("shared.metrics")
LAG_BUCKETS_MS = (100, 250, 500, 1_000, 2_500, 5_000, 30_000, 300_000)
LAG_OVER = f"lag.gt_{LAG_BUCKETS_MS[-1]}"
MINUTE_PREFIX = "webhook.minute."
MINUTES_KEPT = timedelta(hours=1)
HOUR_PREFIX = "webhook.hour."
HOURS_KEPT = timedelta(hours=25)
PRUNE_EVERY = 300.0  # seconds between two prunes of old minutes, per process
RATE_MINUTES = 15

_MSSQL_MERGE = text(
    "MERGE tenant_metrics WITH (HOLDLOCK) AS t "
    "USING (VALUES (:tenant_id, :name, :value, :updated_at)) AS s (tenant_id, name, value, updated_at) "
    "ON t.tenant_id = s.tenant_id AND t.name = s.name "
    "WHEN MATCHED THEN UPDATE SET value = t.value + s.value, updated_at = s.updated_at "
    "WHEN NOT MATCHED THEN INSERT (tenant_id, name, value, updated_at) "
    "VALUES (s.tenant_id, s.name, s.value, s.updated_at);")


def minute_bucket(at: datetime) -> str:
    return f"{MINUTE_PREFIX}{int(at.timestamp()) // 60}"


def hour_bucket(at: datetime) -> str:
    return f"{HOUR_PREFIX}{int(at.timestamp()) // 3600}"


def lag_bucket(seconds: float) -> str:
    ms = max(seconds, 0.0) * 1000
    return next((f"lag.le_{b}" for b in LAG_BUCKETS_MS if ms <= b), LAG_OVER)


class Metrics:
    """A process's unwritten counts. Thread-safe; ``flush`` adds them to the table."""

    def __init__(self, *, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self._pending: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._last_flush = clock()
        self._last_prune: float | None = None

    def add(self, tenant_id: str, name: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self._pending[(tenant_id, name)] += n

    def observe_lag(self, tenant_id: str, seconds: float) -> None:
        with self._lock:
            self._pending[(tenant_id, lag_bucket(seconds))] += 1
            self._pending[(tenant_id, "lag.count")] += 1
            self._pending[(tenant_id, "lag.sum_ms")] += round(max(seconds, 0.0) * 1000)

    def flush(self, engine: Engine) -> int:
        """Write everything pending; on failure the counts stay pending for the next flush."""
        with self._lock:
            batch, self._pending = self._pending, Counter()
            self._last_flush = self.clock()
            prune = self._last_prune is None or self._last_flush - self._last_prune >= PRUNE_EVERY
            if prune:
                self._last_prune = self._last_flush
        if not batch:
            return 0
        try:
            with write_transaction(engine) as conn:
                now = datetime.now(UTC)
                increment(conn, batch, now)
                if prune:
                    prune_minutes(conn, now - MINUTES_KEPT)
                    prune_hours(conn, now - HOURS_KEPT)
        except Exception:
            with self._lock:
                self._pending.update(batch)
            raise
        return len(batch)

    def maybe_flush(self, engine: Engine) -> None:
        """Flush when the interval has passed; never raises (metrics must not fail the work)."""
        if self.clock() - self._last_flush < self.interval:
            return
        try:
            self.flush(engine)
        except Exception as exc:
            log.warning("metrics flush failed (kept for the next one): %s", exc.__class__.__name__)


def increment(conn: Connection, counts: Mapping[tuple[str, str], int], now: datetime) -> None:
    rows = [{"tenant_id": t, "name": n, "value": v, "updated_at": now} for (t, n), v in sorted(counts.items())]
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]  # same API, other dialect
        stmt = insert(tenant_metrics)
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


def lag_percentile(metrics: Mapping[str, int], share: float) -> float | None:
    """The upper bound (seconds) of the bucket holding the ``share`` quantile; None if no samples
    (inf when it lies beyond the last bucket)."""
    total = metrics.get("lag.count", 0)
    if not total:
        return None
    seen = 0
    for bound in LAG_BUCKETS_MS:
        seen += metrics.get(f"lag.le_{bound}", 0)
        if seen >= share * total:
            return bound / 1000
    return float("inf")
