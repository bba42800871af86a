"""Retry policy: which failures to retry and how long to wait. Pure: no I/O, no clock of its own.

Exponential backoff with full jitter (delay uniform in [0, min(cap, base * 2**attempt)]), a cap
on attempts, and a server's Retry-After (seconds or HTTP-date) overriding the computed delay.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    # A Retry-After longer than this is not waited for inside one call: the caller gets
    # SourceUnavailable(retry_at=…) and can come back later (a queue message's visibility).
    max_wait: float = 120.0
    # Real-time work (a webhook's re-read) waits at most this long inside one call; a queue
    # message is better put back with a visibility delay than holding a worker.
    realtime_max_wait: float = 5.0

    def wait_limit(self, priority: str) -> float:
        return self.max_wait if priority == "bulk" else min(self.max_wait, self.realtime_max_wait)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter for retry number ``attempt`` (0 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** attempt))
        return rng.uniform(0, ceiling)

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None) -> float:
        return retry_after if retry_after is not None else self.backoff(attempt, rng)


DEFAULT_RETRY = RetryPolicy()


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or 500 <= status < 600


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_epoch)
