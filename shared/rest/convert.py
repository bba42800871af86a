"""The named conversions a spec's columns use: a source value in, a column value out. Pure.

A value that cannot be converted raises ConversionError naming the column, never the value
(it may be patient data); the record then counts as errored and is not written.
"""
from __future__ import annotations

import json
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from shared.rest.paths import MISSING, lookup
from shared.rest.spec import ColumnMap

_TRUE = {"true", "yes", "y", "1", "t"}
_FALSE = {"false", "no", "n", "0", "f"}


class ConversionError(ValueError):
    pass


def parse_moment(value: Any, fmt: str, zone: tzinfo) -> datetime | None:
    """A moment from ISO 8601, epoch seconds or milliseconds, or a strftime format; naive values
    are read in ``zone``. Returns UTC, or None for null/empty."""
    if value is None or value == "":
        return None
    if fmt in ("epoch", "epoch-ms"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("not a number")
        seconds = float(value) / (1000 if fmt == "epoch-ms" else 1)
        return datetime.fromtimestamp(seconds, UTC)
    if not isinstance(value, str):
        raise ValueError("not text")
    moment = datetime.fromisoformat(value) if fmt == "iso" else datetime.strptime(value, fmt)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def convert(column_name: str, column: ColumnMap, record: dict[str, Any], tenant_zone: tzinfo) -> Any:
    try:
        if column.type == "initials":
            return _initials([lookup(record, p) for p in (column.fields or [column.field or "$"])])
        value = lookup(record, column.field or "$")
        if value is MISSING:
            value = None
        return _CONVERSIONS[column.type](value, column, tenant_zone)
    except (ValueError, TypeError, ArithmeticError, OverflowError) as exc:
        raise ConversionError(f"column {column_name} (from {column.field or column.fields}): cannot convert "
                              f"as {column.type} ({exc.__class__.__name__})") from None


def _string(value: Any, column: ColumnMap, zone: tzinfo) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float, Decimal)):
        return str(value)
    raise TypeError("not a scalar")


def _integer(value: Any, column: ColumnMap, zone: tzinfo) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TypeError("a boolean")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not whole")
        return int(value)
    return int(value)


def _decimal(value: Any, column: ColumnMap, zone: tzinfo) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TypeError("a boolean")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not result.is_finite():
        raise ValueError("not finite")
    return result


def _date(value: Any, column: ColumnMap, zone: tzinfo) -> date | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError("not text")
    if column.format:
        return datetime.strptime(value, column.format).date()
    return date.fromisoformat(value[:10])


def _datetime(value: Any, column: ColumnMap, zone: tzinfo) -> datetime | None:
    declared = column.zone
    return parse_moment(value, column.format or "iso",
                        zone if declared == "tenant" else ZoneInfo(declared) if declared else UTC)


def _boolean(value: Any, column: ColumnMap, zone: tzinfo) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not a boolean")


def _enum(value: Any, column: ColumnMap, zone: tzinfo) -> Any:
    values = column.values or {}
    key = _string(value, column, zone)
    return values[key] if key is not None and key in values else column.default


def _link_id(value: Any, column: ColumnMap, zone: tzinfo) -> str | None:
    """The id at the end of a link ("https://api.example/v1/practitioners/12" -> "12"), or the
    value itself when it is already an id."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError("not a link")
    text = str(value)
    segment = urlsplit(text).path.rstrip("/").rsplit("/", 1)[-1] if "/" in text else text
    if not segment:
        raise ValueError("no id in the link")
    return segment


def _json(value: Any, column: ColumnMap, zone: tzinfo) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _initials(parts: list[Any]) -> str | None:
    words = [p.strip() for p in parts if isinstance(p, str) and p.strip()]
    return "".join(w[0].upper() for w in words) or None


_CONVERSIONS = {
    "string": _string, "integer": _integer, "decimal": _decimal, "date": _date, "datetime": _datetime,
    "boolean": _boolean, "enum": _enum, "link-id": _link_id, "json": _json,
}
