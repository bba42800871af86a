"""Tenant schedules: NCRONTAB and cron, and who is due."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from shared.sync.schedule import due, due_runs, is_valid, previous_fire

T = datetime(2026, 1, 1, 10, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize(("expression", "valid"), [
    ("0 */15 * * * *", True), ("*/15 * * * *", True), ("0 0 2 * * 1-5", True),
    ("every 15 minutes", False), ("* * *", False), ("61 * * * * *", False), ("", False),
])
def test_validity(expression: str, valid: bool) -> None:
    assert is_valid(expression) is valid


def test_previous_fire_for_both_shapes() -> None:
    assert previous_fire("0 */15 * * * *", T) == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert previous_fire("*/15 * * * *", T) == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert previous_fire("30 7 10 * * *", T) == T  # at "now" itself: fired


@dataclass
class Tenant:
    id: str
    schedule: str
    enabled: bool = True
    timezone: str = "UTC"
    hot_schedule: str = "0 0 0 1 1 *"
    full_schedule: str = "0 0 3 * * *"

    def schedule_for(self, kind: str) -> str:
        return {"incremental": self.schedule, "hot": self.hot_schedule, "full": self.full_schedule}[kind]


def test_due_when_the_schedule_fired_since_the_last_run() -> None:
    assert due("0 */15 * * * *", None, T)
    assert due("0 */15 * * * *", T - timedelta(minutes=8), T)  # last run 09:59:30, fired at 10:00
    assert not due("0 */15 * * * *", T - timedelta(minutes=2), T)  # last run 10:05:30, after the fire
    tenants = [Tenant("a", "0 */15 * * * *"), Tenant("b", "0 0 * * * *"), Tenant("c", "0 */5 * * * *", enabled=False)]
    ran = {"full": T - timedelta(hours=1), "hot": T - timedelta(hours=1)}
    last = {("a", "incremental"): T - timedelta(minutes=20), ("b", "incremental"): T - timedelta(minutes=5)}
    last |= {(t, kind): at for t in "ab" for kind, at in ran.items()}
    assert due_runs(tenants, last, T) == [("a", "incremental")]


def test_full_schedule_is_read_in_the_tenant_timezone() -> None:
    # 03:00 in Sydney (UTC+11 in January) is 16:00 UTC the day before.
    sydney = Tenant("s", "0 0 0 1 1 *", timezone="Australia/Sydney")
    before = datetime(2026, 1, 1, 15, 59, tzinfo=UTC)
    last = {("s", "incremental"): before, ("s", "hot"): before, ("s", "full"): before - timedelta(hours=23)}
    assert due_runs([sydney], last, before) == []
    assert due_runs([sydney], last, before + timedelta(minutes=1)) == [("s", "full")]


def test_a_tenant_not_yet_loaded_gets_its_full_run_alone() -> None:
    tenants = [Tenant("new", "0 */15 * * * *"), Tenant("old", "0 */15 * * * *")]
    assert due_runs(tenants, {}, T, loaded={"old"}) == [("new", "full"), ("old", "full"), ("old", "hot"),
                                                         ("old", "incremental")]
    assert due_runs(tenants, {}, T) == [(t, k) for t in ("new", "old") for k in ("full", "hot", "incremental")]
    # A first load that failed at 09:50 is tried again when the 15-minute schedule fires (10:00),
    # though the full schedule fires only at 03:00.
    failed_first = {("new", "full"): T - timedelta(minutes=20)}
    assert due_runs(tenants[:1], failed_first, T, loaded=set()) == [("new", "full")]
    assert due_runs(tenants[:1], {("new", "full"): T - timedelta(minutes=5)}, T, loaded=set()) == []
