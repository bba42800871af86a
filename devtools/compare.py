"""Compare a tenant's mirror with the source's truth: what was lost, what should not be there.

Both sides are sets of live (type, id, version); a tombstoned row is not live. Used by
``serve --once``, the end-to-end tests and the fault harness.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from shared.fhir.transform import TABLE_FOR_TYPE
from shared.settings import TenantConfig
from shared.store.declared import declare, find_table
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


@dataclass(frozen=True)
class Explained:
    """A difference split by cause: ``behind`` changed at the source after the sync's watermark for
    its type (the next sync, or a queued webhook, brings it); the rest is really lost or unexpected."""

    behind: dict[str, int]  # resource type -> differing records not yet due
    lost: list[Key]
    unexpected: list[Key]
    difference: Difference  # the whole of it, unexplained

    def summary(self, limit: int = 5) -> str:
        parts = []
        if self.behind:
            parts.append("behind the source: " + ", ".join(f"{n} {kind}" for kind, n in sorted(self.behind.items()))
                         + " (changed since the last sync's window; the next sync takes them)")
        if self.lost or self.unexpected:
            parts.append(f"lost {len(self.lost)} {self.lost[:limit]}, "
                         f"unexpected {len(self.unexpected)} {self.unexpected[:limit]}")
        return "; ".join(parts) or "equal to the source"


def explain(difference: Difference, snapshot: Iterable[Mapping[str, Any]],
            watermarks: Mapping[str, datetime | None]) -> Explained:
    """Split ``difference`` by the source's lastUpdated against each type's sync watermark.

    A record the source changed at or after the watermark has not been due for any sync yet: not
    lost. Webhooks may already have brought it, or be about to; either way it is not a fault."""
    changed = {(e["type"], e["id"]): datetime.fromisoformat(e["lastUpdated"].replace("Z", "+00:00"))
               for e in snapshot}

    def due(key: Key) -> bool:
        mark, when = watermarks.get(key[0]), changed.get((key[0], key[1]))
        return mark is not None and when is not None and when < mark

    behind: dict[str, int] = {}
    for key in {(k[0], k[1]) for k in (*difference.lost, *difference.unexpected) if not due(k)}:
        behind[key[0]] = behind.get(key[0], 0) + 1
    return Explained(behind, [k for k in difference.lost if due(k)], [k for k in difference.unexpected if due(k)],
                     difference)


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


# -- REST sources -----------------------------------------------------------------------------------
def record_digest(record: Mapping[str, Any]) -> str:
    """A record's content, as a short text: a declared table keeps the whole record, so its
    version in a comparison is what it holds."""
    return hashlib.sha1(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rest_mirrored(engine: Engine, tenant: TenantConfig, *, times: bool = False) -> set[Key]:
    """A rest tenant's live rows: (entity, id, version) — the source's updated-at where its table
    is built in, the digest of the kept record where the spec declares the table (``times``:
    the stored updated-at everywhere, which for a source that states none is when it was seen)."""
    found: set[Key] = set()
    declare([tenant.rest_spec()])  # its tables, for this process
    with engine.connect() as conn:
        for entity in tenant.rest_spec().entities:
            table = find_table(entity.table_name)
            declared = not isinstance(entity.table, str) and not times
            column = table.c.record if declared else table.c.source_updated_at
            for source_id, value in conn.execute(select(table.c.source_id, column).where(
                    table.c.tenant_id == tenant.id, table.c.deleted_at.is_(None))):
                found.add((entity.name, source_id, record_digest(json.loads(value)) if declared else value.isoformat()))
    return found


def rest_truth(api: Any, tenant: TenantConfig) -> set[Key]:
    """The same, from a REST sandbox's store (devtools/sandbox/rest): what the tenant should hold."""
    found: set[Key] = set()
    for entity in tenant.rest_spec().entities:
        declared = not isinstance(entity.table, str)
        for rec in api.store.live(entity.name):
            if not api.belongs(rec.record, tenant.variables):
                continue
            stamp = api.last_updated(entity.name, rec)
            found.add((entity.name, rec.id, record_digest(rec.record) if declared
                       else datetime.fromisoformat(stamp.replace("Z", "+00:00")).isoformat()))
    return found
