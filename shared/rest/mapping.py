"""From a REST answer to mirror rows: find the records, then map each one. Pure.

An answer without records where the spec says they are is a ShapeError naming the path (the
page is not written). A record that cannot be mapped (no id, a value that will not convert)
is a RecordError: counted as errored, the rest of the page is written.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from shared.records import MirrorRow
from shared.rest.convert import ConversionError, convert, parse_moment
from shared.rest.load import mapper_function
from shared.rest.paths import MISSING, lookup
from shared.rest.spec import Entity

MAX_ID_LENGTH = 64

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


class ShapeError(ValueError):
    """The answer is not shaped as the spec says: ``path`` is what was missing."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


class RecordError(ValueError):
    """One record cannot be mapped; the message names the field, never a value."""


def extract_records(body: Any, paths: Sequence[str]) -> list[dict[str, Any]]:
    for path in paths:
        found = lookup(body, path)
        if found is MISSING:
            continue
        if not isinstance(found, list):
            raise ShapeError(path, f"the records at {path!r} are not a list")
        for i, item in enumerate(found):
            if not isinstance(item, dict):
                raise ShapeError(f"{path}.{i}", f"record {i} at {path!r} is not an object")
        return found
    names = " or ".join(repr(p) for p in paths)
    raise ShapeError(paths[0], f"no records at {names} in the answer")


def source_id(record: dict[str, Any], path: str) -> str:
    """The record's id as text: integers (however large) become their decimal digits."""
    value = lookup(record, path)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ID_LENGTH:
        return value.strip()
    raise RecordError(f"id at {path!r} missing or not text/integer of at most {MAX_ID_LENGTH} characters")


class EntityMapper:
    """Maps one entity's records; built once per entity (the mapper function is looked up once)."""

    def __init__(self, entity: Entity, tenant_zone: tzinfo, *, declared: bool) -> None:
        self.entity, self.tenant_zone, self.declared = entity, tenant_zone, declared
        self.columns = entity.columns
        self.function: Callable[[dict[str, Any], tzinfo], dict[str, Any]] | None = (
            mapper_function(entity.mapper) if entity.mapper else None)
        self.updated_zone = ZoneInfo(entity.updated_at.zone) if entity.updated_at else None

    def row(self, record: dict[str, Any], observed_at: datetime) -> MirrorRow:
        """The record as a row; without an updated-at field its version is ``observed_at`` (when
        the listing page was asked for, or a webhook's event time). ``observed_at`` in
        microseconds is its version number either way: at an equal updated-at (HIE's are to the
        second) the copy seen or sent later wins (docs/sources.md, "the order of writes")."""
        rid = source_id(record, self.entity.id)
        updated_at = self._updated_at(record) or observed_at
        content: dict[str, Any] = {}
        try:
            for name, column in self.columns.items():
                content[name] = convert(name, column, record, self.tenant_zone)
        except ConversionError as exc:
            raise RecordError(str(exc)) from None
        if self.function is not None:
            content.update(self.function(record, self.tenant_zone))
        if self.declared:
            content["record"] = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
        return MirrorRow(self.entity.table_name, rid, updated_at, str((observed_at - EPOCH) // MICROSECOND),
                         content=content, observed=self.entity.updated_at is None, seen_version=True)

    def _updated_at(self, record: dict[str, Any]) -> datetime | None:
        spec = self.entity.updated_at
        if spec is None:
            return None
        value = lookup(record, spec.field)
        try:
            return parse_moment(None if value is MISSING else value, spec.format, self.updated_zone or UTC)
        except (ValueError, TypeError, OverflowError):
            raise RecordError(f"updated_at at {spec.field!r} is not a moment in format {spec.format!r}") from None
