"""Circuit-breaker state kept in the database: one breaker across worker instances."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from shared.queues.memory import InMemoryQueues
from shared.source.breaker import OPEN, BreakerPolicy, CircuitBreaker
from shared.store.breaker import DatabaseBreakerStore
from tests.fakes import installed_runtime


def test_breaker_state_in_the_database_gives_one_probe_across_instances(engine: Engine) -> None:
    """Eight 'instances' (breakers sharing only the database) race for the half-open probe.
    Strict reads (max_age=0): with copies, an instance whose copy still says closed may send for
    up to max_age more (see the next test)."""
    policy = BreakerPolicy(failure_threshold=2, cooldown=30)
    instances = [CircuitBreaker(policy, DatabaseBreakerStore(engine, max_age=0)) for _ in range(8)]
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


def test_each_instance_reads_its_copy_for_max_age_and_a_lost_race_reads_again(engine: Engine) -> None:
    clock = [0.0]
    mine = DatabaseBreakerStore(engine, max_age=1.0, clock=lambda: clock[0])
    policy = BreakerPolicy(failure_threshold=3, cooldown=30)
    breaker, other = CircuitBreaker(policy, mine), CircuitBreaker(policy, DatabaseBreakerStore(engine, max_age=0))
    key = "t1|copy.example"
    assert breaker.gate(key, 1000.0)[0] == "go"  # closed; this process keeps a copy
    other.record(key, False, 1000.5)  # another instance counts a failure (1 of 3)
    # Our failure, decided on the stale copy (0 failures), loses its compare-and-set, is decided
    # again on the database's state and counted on top: nothing is lost.
    breaker.record(key, False, 1000.6)
    assert other.store.load(key).failures == 2
    other.record(key, False, 1000.7)  # the other instance opens it
    assert not breaker.is_open(key, 1001.0)  # our copy (2 failures, closed) is under max_age
    clock[0] = 1.0
    assert breaker.is_open(key, 1001.0)  # the copy aged out: the database says open


def test_every_event_loop_of_one_process_sees_a_hold_at_once(database_url: str, tmp_path: Path) -> None:
    """Workers run one event loop each, with a registry each; a Retry-After one of them meets must
    hold the others now, not when their copy of the shared state ages out."""
    from shared.bootstrap import Runtime

    with installed_runtime(database_url, tmp_path, [], InMemoryQueues()) as runtime:
        assert isinstance(runtime, Runtime)
        registries: list[Any] = []

        def registry() -> None:
            async def get() -> Any:
                return runtime.sources()
            registries.append(asyncio.run(get()))

        for _ in range(2):
            worker = threading.Thread(target=registry)
            worker.start()
            worker.join()
        one, two = registries
        assert one is not two  # one httpx client per loop ...
        key = "t1|api.example"
        assert two.breaker.gate(key, 1000.0)[0] == "go"  # the second loop has read (and copied) the state
        one.breaker.hold(key, 1030.0)
        assert two.breaker.gate(key, 1000.1) == ("wait", 1030.0)  # ... one breaker state per process
