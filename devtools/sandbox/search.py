"""FHIR date search for the sandbox: ``_lastUpdated`` / ``date`` values with prefixes.

A date-only value is a whole UTC day, an instant a point. Every prefix (ge, gt, le, lt, eq; none
means eq) narrows one half-open range [lo, hi), which both filters and bounds a sorted scan.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

PREFIXES = ("ge", "gt", "le", "lt", "eq")
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


class BadRequest(ValueError):
    """A request the sandbox cannot read (a search parameter, an admin body): a 400 with an OperationOutcome."""


def parse_instant(text: str) -> tuple[datetime, datetime]:
    """The range [start, end) a FHIR date/dateTime/instant value covers, in UTC."""
    try:
        if len(text) == 10:
            day = datetime.fromisoformat(text).replace(tzinfo=UTC)
            return day, day + timedelta(days=1)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value, value + timedelta(microseconds=1)
    except (ValueError, OverflowError):  # OverflowError: a value at the calendar's edge (9999-12-31)
        raise BadRequest(f"not a FHIR date or instant: {text[:40]!r}") from None


def date_range(raws: list[str]) -> tuple[datetime, datetime]:
    """[lo, hi) satisfying every value (they are ANDed, as repeated FHIR parameters are)."""
    lo, hi = EARLIEST, LATEST
    for raw in raws:
        prefix, value = (raw[:2], raw[2:]) if raw[:2] in PREFIXES else ("eq", raw)
        start, end = parse_instant(value)
        if prefix in ("ge", "eq"):
            lo = max(lo, start)
        if prefix == "gt":
            lo = max(lo, end)
        if prefix in ("le", "eq"):
            hi = min(hi, end)
        if prefix == "lt":
            hi = min(hi, start)
    return lo, hi
