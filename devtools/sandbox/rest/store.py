"""A REST sandbox's records: per entity, by id, with the time each last changed and deletions.

Thread-safe (one lock). Every change gets a distinct, increasing time (a microsecond apart at
least), so ``>=`` filters and listings ordered by change time are exact. Churn creates, updates
and deletes records through the API's own factories, so a churned record has the API's shape.
"""
from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass
class Rec:
    id: str
    record: dict[str, Any]  # what the API returns (its id field, its time field if it has one)
    updated: datetime
    deleted: bool = False


@dataclass(frozen=True)
class Change:
    entity: str
    id: str
    action: str  # created | updated | deleted
    at: datetime
    record: dict[str, Any]


class RestStore:
    def __init__(self, clock: Callable[[], datetime] | None = None, *, seed: int = 1) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.lock = threading.RLock()
        self.rng = random.Random(seed * 104_729)
        self.entities: dict[str, dict[str, Rec]] = {}
        self._last = datetime(1970, 1, 1, tzinfo=UTC)

    def add(self, entity: str, rid: str, record: dict[str, Any], updated: datetime) -> None:
        with self.lock:
            self.entities.setdefault(entity, {})[rid] = Rec(rid, record, updated)

    def now(self) -> datetime:
        """A change time after every earlier one."""
        with self.lock:
            moment = max(self.clock(), self._last + timedelta(microseconds=1))
            self._last = moment
            return moment

    def live(self, entity: str) -> list[Rec]:
        with self.lock:
            return [r for r in self.entities.get(entity, {}).values() if not r.deleted]

    def read(self, entity: str, rid: str) -> Rec | None:
        with self.lock:
            rec = self.entities.get(entity, {}).get(rid)
            return None if rec is None or rec.deleted else rec

    def snapshot(self, time_field: Callable[[str, Rec], str | None]) -> list[dict[str, Any]]:
        with self.lock:
            return [{"type": entity, "id": rec.id, "lastUpdated": time_field(entity, rec), "deleted": rec.deleted}
                    for entity, recs in self.entities.items() for rec in recs.values()]

    def churn(self, creates: int, updates: int, deletes: int, *,
              create: Callable[[str, int, datetime], tuple[str, dict[str, Any]]],
              update: Callable[[str, dict[str, Any], datetime], dict[str, Any]],
              entities: list[str]) -> list[Change]:
        """Spread the changes over ``entities`` in turn; creates get the next number of their entity."""
        changes = []
        with self.lock:
            for n in range(creates):
                entity = entities[n % len(entities)]
                at = self.now()
                rid, record = create(entity, len(self.entities.get(entity, {})), at)
                self.add(entity, rid, record, at)
                changes.append(Change(entity, rid, "created", at, record))
            for n in range(updates + deletes):
                entity = entities[n % len(entities)]
                candidates = sorted(r.id for r in self.live(entity))
                if not candidates:
                    raise ValueError(f"no live {entity} left to change")
                rec = self.entities[entity][self.rng.choice(candidates)]
                at = self.now()
                if n < updates:
                    rec.record, rec.updated = update(entity, rec.record, at), at
                    changes.append(Change(entity, rec.id, "updated", at, rec.record))
                else:
                    rec.deleted, rec.updated = True, at
                    changes.append(Change(entity, rec.id, "deleted", at, rec.record))
        return changes
