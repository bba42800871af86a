"""MirrorRow: what a transformer produces and the store writes, for every mirrored table."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeGuard, get_args

# The source's resource types the mirror keeps, in the order a reconcile reads them (references
# point backwards: roles name practitioners, appointments name clients and roles).
ResourceType = Literal["Practitioner", "PractitionerRole", "Patient", "Appointment", "Invoice", "Referral"]
RESOURCE_TYPES: tuple[str, ...] = get_args(ResourceType)
# A FHIR id ([A-Za-z0-9-.]{1,64}) that reads back as itself in a URL path: "." and ".." (any id of
# dots alone) are path segments that a client removes, so a re-read of them fetches something else.
_FHIR_ID = re.compile(r"^(?!\.+$)[A-Za-z0-9\-.]{1,64}$")


def is_fhir_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _FHIR_ID.match(value) is not None


@dataclass(frozen=True, slots=True)
class MirrorRow:
    """One source resource as a row of a mirrored table, or its tombstone.

    ``content`` holds the table's own columns; the store adds tenant, hash and sync times.
    """

    table: str
    source_id: str
    source_updated_at: datetime
    source_version: str | None = None
    content: dict[str, Any] = field(default_factory=dict)
    deleted_at: datetime | None = None
    # The source states no change time: ``source_updated_at`` is when the record was seen (its
    # listing page was asked for, or a webhook's event time). Such a row is written only when its
    # content changed (docs/sources.md, "Sources without a change filter").
    observed: bool = False
    # ``source_version`` is when the record was seen, in microseconds (a REST source's rows): it
    # breaks ties of an equal change time, and never rewrites the same content (guard.decide).
    seen_version: bool = False

    @classmethod
    def tombstone(cls, table: str, source_id: str, at: datetime, version: str | None = None) -> MirrorRow:
        """A deletion observed at ``at``: it wins over every stored version not newer than that."""
        return cls(table=table, source_id=source_id, source_updated_at=at, source_version=version, deleted_at=at)

    @property
    def is_tombstone(self) -> bool:
        return self.deleted_at is not None
