"""Circuit breaker per (tenant, host): a pure state machine plus a store for its state.

closed --K consecutive failures--> open --cooldown passed, one caller claims the probe-->
half_open --probe succeeds--> closed / --probe fails--> open again. The same record carries the
source's Retry-After (``not_before``), so that gate too holds across instances. Exactly one probe runs in
half-open however many callers ask at once: claiming it is an atomic compare-and-set in the
store. The in-memory store serves one process; the database store (shared by every worker
instance) implements the same two operations.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Protocol

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerState:
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probe_until: float = 0.0  # half-open: the probe's lease; another may probe after it lapses
    not_before: float = 0.0  # a source's Retry-After: no request to it before then


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    cooldown: float = 30.0
    probe_timeout: float = 60.0

    def admit(self, s: BreakerState, now: float) -> tuple[bool, BreakerState]:
        """May a request go now? Returns the (possibly changed) state to store."""
        if s.state == CLOSED:
            return True, s
        if s.state == OPEN and now - s.opened_at >= self.cooldown:
            return True, replace(s, state=HALF_OPEN, probe_until=now + self.probe_timeout)
        if s.state == HALF_OPEN and now >= s.probe_until:  # the probe never reported: try again
            return True, replace(s, probe_until=now + self.probe_timeout)
        return False, s

    def on_success(self, s: BreakerState) -> BreakerState:
        return BreakerState(not_before=s.not_before)

    def on_failure(self, s: BreakerState, now: float) -> BreakerState:
        if s.state == HALF_OPEN:
            return BreakerState(OPEN, s.failures + 1, now, not_before=s.not_before)
        failures = s.failures + 1
        if failures >= self.failure_threshold:
            return BreakerState(OPEN, failures, now, not_before=s.not_before)
        return replace(s, failures=failures)

    def retry_at(self, s: BreakerState) -> float:
        return s.opened_at + self.cooldown if s.state == OPEN else s.probe_until


DEFAULT_BREAKER = BreakerPolicy()


class BreakerStore(Protocol):
    def load(self, key: str) -> BreakerState: ...

    def compare_and_set(self, key: str, expected: BreakerState, new: BreakerState) -> bool: ...


class MemoryBreakerStore:
    def __init__(self) -> None:
        self._states: dict[str, BreakerState] = {}
        self._lock = threading.Lock()

    def load(self, key: str) -> BreakerState:
        with self._lock:
            return self._states.get(key, BreakerState())

    def compare_and_set(self, key: str, expected: BreakerState, new: BreakerState) -> bool:
        with self._lock:
            if self._states.get(key, BreakerState()) != expected:
                return False
            self._states[key] = new
            return True


class CircuitBreaker:
    """The policy applied to a store; every method is safe under concurrency."""

    def __init__(self, policy: BreakerPolicy, store: BreakerStore) -> None:
        self.policy, self.store = policy, store

    def admit(self, key: str, now: float) -> tuple[bool, float]:
        """(may send, when to come back if not)."""
        while True:
            current = self.store.load(key)
            allowed, new = self.policy.admit(current, now)
            if new == current:
                return allowed, self.policy.retry_at(current)
            if self.store.compare_and_set(key, current, new):
                return allowed, self.policy.retry_at(new)
            # Someone else changed it (took the probe, say): decide again on fresh state.

    def record(self, key: str, success: bool, now: float) -> None:
        while True:
            current = self.store.load(key)
            new = self.policy.on_success(current) if success else self.policy.on_failure(current, now)
            if new == current or self.store.compare_and_set(key, current, new):
                return

    def gate(self, key: str, now: float) -> tuple[str, float]:
        """'go' (a request may be sent; the probe is claimed if half-open), 'wait' until a
        Retry-After passes, or 'open' until the breaker lets a probe through."""
        held = self.held_until(key)
        if now < held:
            return "wait", held
        allowed, retry_at = self.admit(key, now)
        return ("go", now) if allowed else ("open", retry_at)

    def held_until(self, key: str) -> float:
        """The source's Retry-After, as any instance recorded it (0: none)."""
        return self.store.load(key).not_before

    def hold(self, key: str, until: float) -> None:
        """Honour a Retry-After for every caller of this source, in every instance."""
        while True:
            current = self.store.load(key)
            if current.not_before >= until or self.store.compare_and_set(key, current, replace(current, not_before=until)):
                return

    def is_open(self, key: str, now: float) -> bool:
        """For the engine to skip a tenant's work early: True while no request would be sent."""
        state = self.store.load(key)
        return not self.policy.admit(state, now)[0]
