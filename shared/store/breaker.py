"""Circuit-breaker state in the database, so every worker instance sees the same breaker.

The breaker's two operations map onto SQL: load is a SELECT; compare-and-set is an UPDATE
guarded by every field of the expected state (or an INSERT when no row exists yet), and it
succeeded only if it changed exactly one row. A lost race returns False and the breaker
decides again on fresh state, which is what lets exactly one instance take the half-open probe.

Every request consults the breaker two or three times, so loads are served from this process's
copy for up to ``max_age`` seconds (another instance's change shows within that time; a
decision made on a stale copy fails its compare-and-set, which drops the copy, so the retry reads
the database). Without it each source request cost three database round trips, on the event loop.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from shared.source.breaker import BreakerState
from shared.store.engine import write_transaction
from shared.store.schema import source_health

_FIELDS = ("state", "failures", "opened_at", "probe_until", "not_before")


class DatabaseBreakerStore:
    def __init__(self, engine: Engine, *, max_age: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine, self.max_age, self.clock = engine, max_age, clock
        self._copies: dict[str, tuple[BreakerState, float]] = {}
        self._lock = threading.Lock()

    def load(self, key: str) -> BreakerState:
        with self._lock:
            copy = self._copies.get(key)
        if copy is not None and self.clock() - copy[1] < self.max_age:
            return copy[0]
        c = source_health.c
        read_at = self.clock()
        with self.engine.connect() as conn:
            row = conn.execute(select(*(c[f] for f in _FIELDS)).where(c.breaker_key == key)).first()
        state = BreakerState(*row) if row else BreakerState()
        self._keep(key, state, read_at)
        return state

    def _keep(self, key: str, state: BreakerState | None, at: float) -> None:
        with self._lock:
            if state is None:
                self._copies.pop(key, None)
            else:
                self._copies[key] = (state, at)

    def compare_and_set(self, key: str, expected: BreakerState, new: BreakerState) -> bool:
        c = source_health.c
        values = {f: getattr(new, f) for f in _FIELDS}
        now = datetime.now(UTC)
        try:
            with write_transaction(self.engine) as conn:
                changed = conn.execute(update(source_health).where(
                    c.breaker_key == key, and_(*(c[f] == getattr(expected, f) for f in _FIELDS)),
                ).values(updated_at=now, **values)).rowcount
                if changed == 0 and expected == BreakerState():
                    exists = conn.execute(select(c.breaker_key).where(c.breaker_key == key)).first()
                    if exists is None:
                        conn.execute(insert(source_health).values(breaker_key=key, updated_at=now, **values))
                        changed = 1
        except IntegrityError:
            changed = 0  # another instance inserted the first row at the same moment
        # Won: this is the state now. Lost: the copy was stale, so the next load reads the database.
        self._keep(key, new if changed == 1 else None, self.clock())
        return changed == 1
