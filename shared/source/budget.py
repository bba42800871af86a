"""A per-tenant request budget shared by every caller, fed by the source's x-ratelimit headers.

Real-time work (applying a webhook) may spend the budget to the last request; bulk work
(reconcile, replay) stops at a reserve, so a backfill cannot starve real-time updates. Between
observations the budget refills at limit/window per second. A limit the source stops announcing
is forgotten after ``forget_after`` windows without one (the source may have raised it or dropped
it): the budget goes back to its starting limit rather than keep a storm's limit for the life of
the process. Pure arithmetic on an injected clock.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

REALTIME, BULK = "realtime", "bulk"


class RateBudget:
    def __init__(self, limit: int = 500, window: float = 60.0, reserve_share: float = 0.2,
                 clock: Callable[[], float] = time.monotonic, forget_after: float = 10) -> None:
        self.limit, self.window, self.reserve_share, self.clock = limit, window, reserve_share, clock
        self.default_limit, self.forget_after = limit, forget_after
        self._remaining = float(limit)
        self._at = self._announced_at = clock()
        self._lock = threading.Lock()

    def _forget_stale_limit(self, now: float) -> None:
        if self.limit != self.default_limit and now - self._announced_at > self.forget_after * self.window:
            self.limit, self._remaining, self._at = self.default_limit, float(self.default_limit), now

    def _estimate(self, now: float) -> float:
        self._forget_stale_limit(now)
        refill = (now - self._at) * self.limit / self.window
        return min(float(self.limit), self._remaining + refill)

    def observe(self, limit: str | None, remaining: str | None) -> None:
        """Take the source's word for it (x-ratelimit-limit / x-ratelimit-remaining)."""
        if not (limit and limit.isdigit() and int(limit) > 0):
            return  # no (or a meaningless) limit: a remaining count alone says nothing
        with self._lock:
            self.limit, self._announced_at = int(limit), self.clock()
            if remaining and remaining.lstrip("-").isdigit():
                self._remaining, self._at = float(max(int(remaining), 0)), self.clock()

    def take(self, priority: str) -> float:
        """Spend one request now and return 0, or return how long to wait first (nothing spent)."""
        floor = self.limit * self.reserve_share if priority == BULK else 0.0
        with self._lock:
            now = self.clock()
            available = self._estimate(now)
            if available - 1 >= floor:
                self._remaining, self._at = available - 1, now
                return 0.0
            return (floor + 1 - available) * self.window / self.limit

    def remaining(self) -> float:
        with self._lock:
            return self._estimate(self.clock())
