"""What stands between a request and the sandbox's data: tokens, the rate limit and faults.

Each is a small object with an injectable clock (and random source), testable without HTTP.
"""
from __future__ import annotations

import math
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


class TokenStore:
    """Client-credentials tokens that expire after ``ttl`` seconds (Halaxy: 15 minutes)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.clock = ttl, clock
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._expiry[token] = self.clock() + self.ttl
        return token

    def check(self, token: str) -> str:
        """'ok', 'expired' or 'unknown'."""
        with self._lock:
            expiry = self._expiry.get(token)
        if expiry is None:
            return "unknown"
        return "ok" if self.clock() < expiry else "expired"


class SlidingWindow:
    """At most ``limit`` requests in any ``window`` seconds, per client."""

    def __init__(self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        # Told of every decision (client, when, verdict): a harness counts 429s and late arrivals.
        self.watch: Callable[[str, float, tuple[bool, int, int]], None] | None = None
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, client: str) -> tuple[bool, int, int]:
        """(admitted, remaining, retry_after seconds when refused)."""
        now = self.clock()
        verdict = self._decide(client, now)
        if self.watch is not None:
            self.watch(client, now, verdict)
        return verdict

    def _decide(self, client: str, now: float) -> tuple[bool, int, int]:
        with self._lock:
            seen = self._seen.setdefault(client, deque())
            while seen and seen[0] <= now - self.window:
                seen.popleft()
            if self.limit <= 0 or len(seen) < self.limit:
                seen.append(now)
                return True, max(self.limit - len(seen), 0), 0
            return False, 0, max(1, math.ceil(seen[0] + self.window - now))


@dataclass(kw_only=True)  # by name: a positional call once passed the rng as hang_rate
class Faults:
    """Injected trouble: a share of 5xx answers, dropped connections, requests that hang (held for
    ``hang_ms``, then dropped unanswered: the client's timeout must fire), added latency, and
    ``hidden`` ids that searches leave out while a read by id still finds them (a listing that
    misses a record: delete detection must confirm before it deletes)."""

    error_rate: float = 0.0
    drop_rate: float = 0.0
    latency_ms: int = 0
    hang_rate: float = 0.0
    hang_ms: int = 5000
    hidden: set[str] = field(default_factory=set)
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def draw(self) -> str | int | None:
        """None (serve it), 'drop', 'hang', or an HTTP status to answer with."""
        roll = self.rng.random()
        if roll < self.drop_rate:
            return "drop"
        if roll < self.drop_rate + self.hang_rate:
            return "hang"
        if roll < self.drop_rate + self.hang_rate + self.error_rate:
            return self.rng.choice((500, 502, 503))
        return None

    def settings(self) -> dict[str, float | int]:
        return {"fault_rate": self.error_rate, "drop_rate": self.drop_rate, "latency_ms": self.latency_ms,
                "hang_rate": self.hang_rate, "hang_ms": self.hang_ms}
