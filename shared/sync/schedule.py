"""Tenant schedules: NCRONTAB (6 fields, seconds first, as Azure timers) or cron (5 fields).

Pure: which tenants are due, given when each last started a run and the time now.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from croniter import croniter


def _parts(expression: str) -> tuple[str, bool]:
    return expression, len(expression.split()) == 6


def is_valid(expression: str) -> bool:
    text, seconds_first = _parts(expression)
    return len(text.split()) in (5, 6) and croniter.is_valid(text, second_at_beginning=seconds_first)


def previous_fire(expression: str, now: datetime) -> datetime:
    """The latest time at or before ``now`` the schedule fires (croniter's get_prev is strictly
    before its start: a tenant firing at the timer's own :00 would otherwise wait a period)."""
    text, seconds_first = _parts(expression)
    fired = croniter(text, now + timedelta(microseconds=1), second_at_beginning=seconds_first).get_prev(datetime)
    return fired.replace(fold=0)


def due(schedule: str | None, last_started: datetime | None, now: datetime) -> bool:
    """Due when the schedule fired since the last run started (or there never was one); never
    without a schedule."""
    if schedule is None:
        return False
    return last_started is None or previous_fire(schedule, now) > last_started


KINDS = ("full", "hot", "incremental")


class Scheduled(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def timezone(self) -> str: ...
    @property
    def enabled(self) -> bool: ...

    def schedule_for(self, kind: str) -> str | None: ...


def due_runs(tenants: Iterable[Scheduled], last_started: Mapping[tuple[str, str], datetime],
             now: datetime, loaded: Collection[str] | None = None) -> list[tuple[str, str]]:
    """(tenant id, kind) for every enabled tenant's reconcile kind whose schedule fired since that
    kind last started. Schedules read in the tenant's timezone ("0 0 3 * * *" is 03:00 local).

    With ``loaded`` (the tenants with a completed full run), a tenant not in it gets its full run
    alone — until its first load is done, hot and incremental runs would read the same pages
    again — and gets it whenever any of its schedules fired since the last full run started: a
    first load that failed is tried again at the tenant's usual pace, not at the next nightly full."""
    out = []
    for tenant in tenants:
        if not tenant.enabled:
            continue
        local = now.astimezone(ZoneInfo(tenant.timezone))
        if loaded is None or tenant.id in loaded:
            out += [(tenant.id, kind) for kind in KINDS
                    if due(tenant.schedule_for(kind), last_started.get((tenant.id, kind)), local)]
        elif any(due(tenant.schedule_for(kind), last_started.get((tenant.id, "full")), local) for kind in KINDS):
            out.append((tenant.id, "full"))
    return out


def due_modes(tenants: Iterable[Any], last_started: Mapping[tuple[str, str], datetime], now: datetime,
              loaded: Collection[str] | None = None) -> list[tuple[str, str]]:
    """(tenant id, mode name) for every sync mode whose schedule fired since that mode last
    started (``last_started`` keys modes as "mode:NAME"); none for a tenant not yet fully loaded."""
    out = []
    for tenant in tenants:
        if not tenant.enabled or not tenant.modes or (loaded is not None and tenant.id not in loaded):
            continue
        local = now.astimezone(ZoneInfo(tenant.timezone))
        out += [(tenant.id, mode.name) for mode in tenant.modes
                if due(mode.schedule, last_started.get((tenant.id, f"mode:{mode.name}")), local)]
    return out


def next_fire(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` the schedule fires."""
    text, seconds_first = _parts(expression)
    return croniter(text, after, second_at_beginning=seconds_first).get_next(datetime).replace(fold=0)
