"""The sandbox's gates with an injected clock: token expiry, sliding-window rate limit, faults."""
from __future__ import annotations

import random
from collections import Counter

from devtools.sandbox.gates import Faults, SlidingWindow, TokenStore
from devtools.sandbox.search import date_range, parse_instant
from tests.fakes import ManualClock


def test_tokens_expire_after_their_ttl() -> None:
    clock = ManualClock(1000.0)
    store = TokenStore(30, clock)
    token = store.issue()
    assert store.check(token) == "ok" and store.check("forged") == "unknown"
    clock.now += 29.9
    assert store.check(token) == "ok"
    clock.now += 0.2
    assert store.check(token) == "expired"


def test_sliding_window_admits_limit_per_window_and_says_when_to_retry() -> None:
    clock = ManualClock(1000.0)
    window = SlidingWindow(3, 60, clock)
    assert [window.admit("c")[:2] for _ in range(3)] == [(True, 2), (True, 1), (True, 0)]
    clock.now += 20
    assert window.admit("c") == (False, 0, 40)
    assert window.admit("other")[0]  # per client
    clock.now += 40
    assert window.admit("c")[:2] == (True, 2)  # all three (same instant) slid out together


def test_faults_draw_the_configured_shares() -> None:
    faults = Faults(error_rate=0.1, drop_rate=0.05, rng=random.Random(3))
    draws = Counter("drop" if d == "drop" else "error" if d else "ok" for d in (faults.draw() for _ in range(20000)))
    assert 0.09 < draws["error"] / 20000 < 0.11 and 0.04 < draws["drop"] / 20000 < 0.06
    assert Faults().draw() is None


def test_date_ranges_follow_fhir_prefixes() -> None:
    day_start, day_end = parse_instant("2025-03-01")
    assert (day_end - day_start).days == 1
    lo, hi = date_range(["ge2025-03-01", "lt2025-03-02T12:00:00Z"])
    assert lo == day_start and hi.isoformat() == "2025-03-02T12:00:00+00:00"
    lo, hi = date_range(["gt2025-03-01"])
    assert lo == day_end
    lo, hi = date_range(["2025-03-01"])
    assert (lo, hi) == (day_start, day_end)
