"""The source protocol: what the engine (reconcile, apply, deletes) asks of any source.

FHIR (shared/source/client.py) and declarative REST (shared/rest/source.py) implement it. An
entity is what a source lists — a FHIR resource type, a REST spec's entity — and maps to one
mirrored table. A listing is read page by page; each page says where the next one starts
(``resume``: JSON, kept in the run's checkpoint) and maps its records to rows when asked (the
engine maps on a worker thread while the next page is fetched).
"""
from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from shared.records import MirrorRow
from shared.settings import TenantConfig


@dataclass(frozen=True)
class Window:
    """Records changed in [start, end) — or, for ``on="date"``, dated then (the hot window).
    A source whose filter has only a lower bound sends ``start``; later changes come too."""

    start: datetime
    end: datetime
    on: Literal["updated", "date"] = "updated"


@dataclass
class Mapped:
    rows: list[MirrorRow]
    processed: int = 0  # records of the entity on the page
    errored: int = 0  # records that could not be mapped (counted, not written)


@dataclass
class Page:
    map: Callable[[], Mapped]  # pure: safe on a worker thread
    resume: Any | None  # where the next page starts; None on the last page
    total: int | None = None  # the listing's size as the source states it, if it does
    extra: dict[str, Any] = field(default_factory=dict)


class Unreadable(Exception):
    """The source has no single-record read for this entity."""


class Unmappable(ValueError):
    """The record exists but cannot be mapped to a row; retrying will not help."""


class Source(Protocol):
    tenant: TenantConfig
    breaker_key: str

    def entities(self, kind: str) -> tuple[str, ...]:
        """What a reconcile of this kind ("incremental", "hot", "full") lists, in order."""
        ...

    def table(self, entity: str) -> str: ...

    def filters_changes(self, entity: str) -> bool:
        """Whether the source can list only what changed; if not, an incremental run lists it all."""
        ...

    def readable(self, entity: str) -> bool:
        """Whether one record can be read by id (confirms deletions, re-reads webhooks)."""
        ...

    def page_size(self) -> int: ...

    def listing(self, entity: str, window: Window | None, *, resume: Any | None, page_size: int,
                priority: str) -> AsyncGenerator[Page, None]:
        """The pages of a listing: everything (``window`` None) or what the window holds,
        starting at ``resume`` (a checkpoint's) or the first page."""
        ...

    async def fetch(self, entity: str, source_id: str, *, priority: str) -> MirrorRow | None:
        """The record as a row, or None when the source says it is gone (404/410). Raises
        Unreadable where there is no single-record read, Unmappable where the row cannot be made."""
        ...

    def payload_row(self, entity: str, record: dict[str, Any], seen_at: datetime) -> MirrorRow:
        """A record a webhook carried, as a row (its version ``seen_at`` where the source states
        none). Raises Unmappable."""
        ...

    def is_open(self) -> bool: ...
