"""Counters on the real databases: many instances adding at once lose nothing."""
from __future__ import annotations

import threading

from sqlalchemy import Engine

from shared.metrics import Metrics, read_metrics


def test_instances_flushing_the_same_counters_at_once_add_up(engine: Engine) -> None:
    instances = [Metrics(interval=0) for _ in range(6)]
    errors: list[BaseException] = []

    def work(metrics: Metrics) -> None:
        try:
            for i in range(40):
                metrics.add("north", "webhook.received")
                metrics.add("north", f"webhook.rejected.r{i % 3}")
                metrics.observe_lag("north", i / 100)
                metrics.flush(engine)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(m,)) for m in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        counts = read_metrics(conn, "north")
    assert counts["webhook.received"] == 240 == counts["lag.count"]
    assert sum(counts[f"webhook.rejected.r{k}"] for k in range(3)) == 240
    assert counts["lag.sum_ms"] == 6 * sum(round(i * 10) for i in range(40))
    assert sum(v for k, v in counts.items() if k.startswith("lag.le_") or k.startswith("lag.gt_")) == 240


def test_insert_ignore_says_whether_it_inserted(engine: Engine) -> None:
    """The receiver renews an expired inbox key and silence adds to its row only when the insert
    was skipped: the count must be exact on both databases (psycopg's rowcount is -1 here)."""
    from datetime import datetime, timedelta, timezone

    from shared.store.engine import insert_ignore, write_transaction
    from shared.store.schema import inbox

    now = datetime.now(timezone.utc)
    record = {"tenant_id": "north", "idempotency_key": "k", "event_type": "e", "received_at": now,
              "expires_at": now + timedelta(days=1)}
    with write_transaction(engine) as conn:
        assert insert_ignore(conn, inbox, [record]) == 1
        assert insert_ignore(conn, inbox, [record]) == 0
        assert insert_ignore(conn, inbox, []) == 0
