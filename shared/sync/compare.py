"""Compare a tenant's mirror with the source's truth: what was lost, what should not be there.

Both sides are sets of live (type, id, version); a tombstoned row is not live. Used by
``serve --once``, the end-to-end tests and the fault harness.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from shared.fhir.transform import TABLE_FOR_TYPE
from shared.store.schema import MIRRORED_TABLES

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Difference:
    lost: list[Key]  # live at the source, missing or on another version in the mirror
    unexpected: list[Key]  # live in the mirror, not (or not on that version) at the source

    @property
    def equal(self) -> bool:
        return not self.lost and not self.unexpected

    def summary(self, limit: int = 5) -> str:
        return (f"lost {len(self.lost)} {self.lost[:limit]}, "
                f"unexpected {len(self.unexpected)} {self.unexpected[:limit]}")


def mirrored(engine: Engine, tenant_id: str) -> set[Key]:
    found: set[Key] = set()
    with engine.connect() as conn:
        for kind, name in TABLE_FOR_TYPE.items():
            t = MIRRORED_TABLES[name]
            found |= {(kind, sid, version or "") for sid, version in conn.execute(
                select(t.c.source_id, t.c.source_version).where(t.c.tenant_id == tenant_id, t.c.deleted_at.is_(None)))}
    return found


def live_in_snapshot(snapshot: Iterable[Mapping[str, Any]]) -> set[Key]:
    """The sandbox's ``/_sandbox/snapshot`` entries that are not deleted."""
    return {(e["type"], e["id"], str(e["versionId"])) for e in snapshot if not e["deleted"]}


def compare(mirror: set[Key], truth: set[Key]) -> Difference:
    return Difference(sorted(truth - mirror), sorted(mirror - truth))
