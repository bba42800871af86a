"""Per-tenant sync health: how fresh the mirror is against the tenant's own schedule.

``on_time`` while the last successful incremental or full run finished within one interval of
the tenant's incremental schedule, ``delayed`` within two, ``error`` beyond two (or the tenant's
or its spec's ``freshness`` thresholds: HIE on time within 3.5 h, error after 6 h) or after
FAILURE_STREAK consecutive failed runs. A tenant never synced is ``delayed`` until it has
failed FAILURE_STREAK times; a disabled tenant is ``disabled`` (it never makes /api/health 503).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Connection

from shared.settings import TenantConfig
from shared.store.status import final_statuses
from shared.store.status import last_success as store_last_success
from shared.sync.schedule import next_fire, previous_fire

FAILURE_STREAK = 3
FRESHNESS_KINDS = ("incremental", "full")  # hot covers appointments only
FAILED = ("failed", "failed_stale")


@dataclass(frozen=True)
class TenantHealth:
    tenant_id: str
    status: str  # on_time | delayed | error | disabled
    reason: str
    last_success_at: datetime | None
    freshness_seconds: float | None
    interval_seconds: float
    failure_streak: int
    error_after_seconds: float  # freshness beyond this is an error (two intervals, or the thresholds set)

    def as_dict(self) -> dict[str, object]:
        return {"tenant": self.tenant_id, "status": self.status, "reason": self.reason,
                "lastSuccessAt": self.last_success_at.isoformat() if self.last_success_at else None,
                "freshnessSeconds": round(self.freshness_seconds) if self.freshness_seconds is not None else None,
                "intervalSeconds": round(self.interval_seconds), "errorAfterSeconds": round(self.error_after_seconds),
                "failureStreak": self.failure_streak}


def schedule_interval(schedule: str, now: datetime) -> float:
    """Seconds between the schedule's fire at or before ``now`` and the next one (per minute:
    croniter takes ~2 ms, more than the rest of a health check)."""
    return _interval(schedule, now.replace(second=0, microsecond=0))


@lru_cache(maxsize=1024)
def _interval(schedule: str, minute: datetime) -> float:
    fired = previous_fire(schedule, minute)
    return (next_fire(schedule, fired) - fired).total_seconds()


def failure_streak(conn: Connection, tenant_id: str, limit: int = 20) -> int:
    """Finished runs that failed, counted back from the latest start until one did not."""
    streak = 0
    for status in final_statuses(conn, tenant_id, limit):
        if status not in FAILED:
            break
        streak += 1
    return streak


def last_success(conn: Connection, tenant_id: str) -> datetime | None:
    return store_last_success(conn, tenant_id, FRESHNESS_KINDS)


def tenant_health(conn: Connection, tenant: TenantConfig, now: datetime) -> TenantHealth:
    local_now = now.astimezone(tenant.zone)
    interval = schedule_interval(tenant.schedule, local_now)
    stated = tenant.freshness_thresholds()
    on_time, error_after = ((stated.on_time_minutes * 60.0, stated.error_after_minutes * 60.0) if stated
                            else (interval, 2 * interval))
    success, streak = last_success(conn, tenant.id), failure_streak(conn, tenant.id)
    age = (now - success).total_seconds() if success else None
    if not tenant.enabled:
        status, reason = "disabled", "the tenant is disabled"
    elif streak >= FAILURE_STREAK:
        status, reason = "error", f"the last {streak} runs failed"
    elif age is None:
        status, reason = "delayed", "never synced yet"
    elif age > error_after:
        status, reason = "error", (f"no successful sync for over {_span(error_after)}" if stated
                                   else "no successful sync for over two schedule intervals")
    elif age > on_time:
        status, reason = "delayed", (f"no successful sync for over {_span(on_time)}" if stated
                                     else "no successful sync for over one schedule interval")
    else:
        status, reason = "on_time", (f"synced within {_span(on_time)}" if stated
                                     else "synced within one schedule interval")
    return TenantHealth(tenant.id, status, reason, success, age, interval, streak, error_after)


def _span(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:g} h" if hours >= 1 else f"{seconds / 60:g} min"
