"""The version guard: which of two versions of one row wins. Pure; mirrored in SQL by upsert.

Order of versions: ``source_updated_at``, then ``meta.versionId`` when numeric. At an equal
(time, version) a different content hash still applies (the same version mapped by newer code),
except over a tombstone: a deletion wins ties, and a live row must be strictly newer to resurrect.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple


class Outcome(StrEnum):
    INSERTED = "inserted"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    STALE = "stale"
    DELETED = "deleted"
    RESURRECTED = "resurrected"


class StoredVersion(NamedTuple):
    updated_at: datetime
    version_seq: int | None
    content_hash: str
    deleted_at: datetime | None


@dataclass
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    deleted: int = 0
    resurrected: int = 0

    def add(self, outcome: Outcome, n: int = 1) -> None:
        setattr(self, outcome.value, getattr(self, outcome.value) + n)

    def __iadd__(self, other: UpsertCounts) -> UpsertCounts:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    @property
    def written(self) -> int:
        """Rows the upsert changed (inserted, updated, deleted, resurrected)."""
        return self.inserted + self.updated + self.deleted + self.resurrected

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def version_seq(version: str | None) -> int | None:
    """meta.versionId as an integer when it is one (most servers count), else None."""
    if version is not None and version.isdigit() and len(version) < 19:
        return int(version)
    return None


def decide(incoming: StoredVersion, stored: StoredVersion | None, *, by_content: bool = False,
           seen_ties: bool = False) -> Outcome:
    """What writing ``incoming`` over ``stored`` does; the SQL guards in upsert.py agree.

    ``by_content``: the incoming version is only when the record was seen (a source without a
    change time), so a live record whose content is unchanged is not rewritten however newer.
    ``seen_ties``: the version number is when the record was seen (a REST source's listing, or
    its event's time), breaking ties of a coarse change time (HIE's, to the second): the copy seen
    later wins, but at an equal change time the same content is not rewritten for being seen
    again (the SQL guard would allow that write; it is only never asked for)."""
    if stored is None:
        return Outcome.DELETED if incoming.deleted_at else Outcome.INSERTED
    if (by_content and incoming.deleted_at is None and stored.deleted_at is None
            and incoming.content_hash == stored.content_hash):
        return Outcome.UNCHANGED
    if incoming.deleted_at is not None:
        if stored.deleted_at is not None:
            return Outcome.UNCHANGED
        return Outcome.DELETED if incoming.updated_at >= stored.updated_at else Outcome.STALE
    new_key = version_key(incoming.updated_at, incoming.version_seq)
    old_key = version_key(stored.updated_at, stored.version_seq)
    if stored.deleted_at is not None:
        return Outcome.RESURRECTED if new_key > old_key else Outcome.STALE
    if new_key > old_key:
        if (seen_ties and incoming.updated_at == stored.updated_at
                and incoming.content_hash == stored.content_hash):
            return Outcome.UNCHANGED
        return Outcome.UPDATED
    if new_key == old_key:
        return Outcome.UNCHANGED if incoming.content_hash == stored.content_hash else Outcome.UPDATED
    return Outcome.STALE


def version_key(updated_at: datetime, seq: int | None) -> tuple[datetime, int]:
    """What the guard orders versions by: the change time, then the version number (none first)."""
    return updated_at, -1 if seq is None else seq
