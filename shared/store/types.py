"""Column types that behave the same on SQLite, PostgreSQL and Azure SQL."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.dialects import mssql
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[datetime]):
    """A naive UTC timestamp in the database, an aware UTC datetime in Python.

    Naive storage keeps one representation everywhere (SQLite strings sort correctly, Azure SQL
    uses datetime2, PostgreSQL timestamp) and comparisons in SQL stay plain.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> TypeEngine[Any]:
        # Azure SQL's DATETIME rounds to 3.33 ms, which would break the equal-time comparisons
        # of the version guard; DATETIME2 keeps microseconds.
        if dialect.name == "mssql":
            return dialect.type_descriptor(mssql.DATETIME2(precision=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # the transformers' output: skip the conversion
            return value.replace(tzinfo=None)
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs an aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)
