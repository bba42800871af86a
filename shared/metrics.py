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

from sqlalchemy import Engine

from shared.store.engine import write_transaction
from shared.store.metrics import HOUR_PREFIX, MINUTE_PREFIX, increment, prune_hours, prune_minutes

log = logging.getLogger("shared.metrics")
LAG_BUCKETS_MS = (100, 250, 500, 1_000, 2_500, 5_000, 30_000, 300_000)
LAG_OVER = f"lag.gt_{LAG_BUCKETS_MS[-1]}"
MINUTES_KEPT = timedelta(hours=1)
HOURS_KEPT = timedelta(hours=25)
PRUNE_EVERY = 300.0  # seconds between two prunes of old minutes, per process

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
