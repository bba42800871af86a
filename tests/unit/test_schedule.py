"""Tenant schedules: NCRONTAB and cron, and who is due."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from shared.sync.schedule import due, due_tenants, is_valid, previous_fire

T = datetime(2026, 1, 1, 10, 7, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(("expression", "valid"), [
    ("0 */15 * * * *", True), ("*/15 * * * *", True), ("0 0 2 * * 1-5", True),
    ("every 15 minutes", False), ("* * *", False), ("61 * * * * *", False), ("", False),
])
def test_validity(expression: str, valid: bool) -> None:
    assert is_valid(expression) is valid


def test_previous_fire_for_both_shapes() -> None:
    assert previous_fire("0 */15 * * * *", T) == datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
    assert previous_fire("*/15 * * * *", T) == datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
    assert previous_fire("30 7 10 * * *", T) == T  # at "now" itself: fired


@dataclass
class Tenant:
    id: str
    schedule: str
    enabled: bool = True


def test_due_when_the_schedule_fired_since_the_last_run() -> None:
    assert due("0 */15 * * * *", None, T)
    assert due("0 */15 * * * *", T - timedelta(minutes=8), T)  # last run 09:59:30, fired at 10:00
    assert not due("0 */15 * * * *", T - timedelta(minutes=2), T)  # last run 10:05:30, after the fire
    tenants = [Tenant("a", "0 */15 * * * *"), Tenant("b", "0 0 * * * *"), Tenant("c", "0 */5 * * * *", enabled=False)]
    last = {"a": T - timedelta(minutes=20), "b": T - timedelta(minutes=5)}
    assert [t.id for t in due_tenants(tenants, last, T)] == ["a"]
