"""Circuit-breaker state in the database, so every worker instance sees the same breaker.

The breaker's two operations map onto SQL: load is a SELECT; compare-and-set is an UPDATE
guarded by every field of the expected state (or an INSERT when no row exists yet), and it
succeeded only if it changed exactly one row. A lost race returns False and the breaker
decides again on fresh state, which is what lets exactly one instance take the half-open probe.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Engine, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from shared.source.breaker import BreakerState
from shared.store.engine import write_transaction
from shared.store.schema import source_health

_FIELDS = ("state", "failures", "opened_at", "probe_until", "not_before")


class DatabaseBreakerStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load(self, key: str) -> BreakerState:
        c = source_health.c
        with self.engine.connect() as conn:
            row = conn.execute(select(*(c[f] for f in _FIELDS)).where(c.breaker_key == key)).first()
        return BreakerState(*row) if row else BreakerState()

    def compare_and_set(self, key: str, expected: BreakerState, new: BreakerState) -> bool:
        c = source_health.c
        values = {f: getattr(new, f) for f in _FIELDS}
        now = datetime.now(timezone.utc)
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
                return changed == 1
        except IntegrityError:
            return False  # another instance inserted the first row at the same moment
