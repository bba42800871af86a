"""Circuit-breaker state kept in the database: one breaker across worker instances."""
from __future__ import annotations

import threading

from sqlalchemy import Engine

from shared.source.breaker import OPEN, BreakerPolicy, CircuitBreaker
from shared.store.health import DatabaseBreakerStore


def test_breaker_state_in_the_database_gives_one_probe_across_instances(engine: Engine) -> None:
    """Eight 'instances' (breakers sharing only the database) race for the half-open probe."""
    policy = BreakerPolicy(failure_threshold=2, cooldown=30)
    instances = [CircuitBreaker(policy, DatabaseBreakerStore(engine)) for _ in range(8)]
    key = "t1|api.example"
    instances[0].record(key, False, 1000.0)
    instances[1].record(key, False, 1001.0)
    assert instances[5].store.load(key).state == OPEN and instances[6].is_open(key, 1010.0)
    barrier, admitted = threading.Barrier(8), []

    def race(breaker: CircuitBreaker) -> None:
        barrier.wait()
        admitted.append(breaker.admit(key, 1040.0)[0])

    threads = [threading.Thread(target=race, args=(b,)) for b in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(admitted) == [False] * 7 + [True]
    instances[3].record(key, True, 1041.0)
    assert not instances[7].is_open(key, 1041.0)


def test_retry_after_hold_is_shared_through_the_database(engine: Engine) -> None:
    one, two = (CircuitBreaker(BreakerPolicy(), DatabaseBreakerStore(engine)) for _ in range(2))
    one.hold("t1|api.example", 2000.5)
    assert two.gate("t1|api.example", 1990.0) == ("wait", 2000.5)
    assert two.gate("t1|api.example", 2000.5)[0] == "go"
