"""Dashboard periods are the tenant's local calendar, daylight saving included."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.reads.dashboard import local_period, month_days

SYDNEY = ZoneInfo("Australia/Sydney")


def test_days_around_daylight_saving_are_23_and_25_hours_long() -> None:
    autumn = local_period(date(2026, 4, 5), 1, SYDNEY)  # clocks go back at 03:00
    spring = local_period(date(2026, 10, 4), 1, SYDNEY)  # clocks go forward at 02:00
    assert autumn.end - autumn.start == timedelta(hours=25)
    assert spring.end - spring.start == timedelta(hours=23)
    assert autumn.start == datetime(2026, 4, 4, 13, tzinfo=UTC)  # midnight AEDT (UTC+11)
    assert autumn.end == datetime(2026, 4, 5, 14, tzinfo=UTC)  # midnight AEST (UTC+10)


def test_a_week_and_a_month_in_local_time() -> None:
    week = local_period(date(2026, 3, 30), 7, SYDNEY)  # Monday; the week holds the autumn change
    assert week.end - week.start == timedelta(days=7, hours=1)
    assert month_days(date(2026, 2, 14)) == (date(2026, 2, 1), 28)
    assert month_days(date(2028, 2, 29)) == (date(2028, 2, 1), 29)
    assert month_days(date(2026, 12, 31)) == (date(2026, 12, 1), 31)
