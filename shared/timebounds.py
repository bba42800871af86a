"""The dates and instants the service computes with, and the check every entry point uses.

Week and month bounds, timezone conversions and sync windows add days and offsets to what comes
in; at the calendar's edges (0001-01-01, 9999-12-31) Python's datetime overflows. Nothing a
practice records lies outside 1900–2999, so a value outside is refused where it enters — an HTTP
parameter, a queue message, a webhook timestamp, a CLI flag — never met as an OverflowError later.
"""
from __future__ import annotations

from datetime import UTC, date, datetime

EARLIEST_DAY = date(1900, 1, 1)
LATEST_DAY = date(2999, 12, 31)
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC)
RANGE_TEXT = f"between {EARLIEST_DAY.isoformat()} and {LATEST_DAY.isoformat()}"


def day_in_range(day: date) -> bool:
    return EARLIEST_DAY <= day <= LATEST_DAY


def instant_in_range(at: datetime) -> bool:
    """An aware instant within the range (a naive one is never in range: its zone is unknown)."""
    return at.tzinfo is not None and at.utcoffset() is not None and EARLIEST <= at <= LATEST


def checked_instant(at: datetime) -> datetime:
    """For validators: ``at`` itself, or a ValueError naming the range."""
    if not instant_in_range(at):
        raise ValueError(f"a time with an offset, {RANGE_TEXT}")
    return at
