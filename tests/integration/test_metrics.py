"""Counters on the real databases: many instances adding at once lose nothing."""
from __future__ import annotations

import threading
from datetime import UTC

from sqlalchemy import Engine

from shared.metrics import Metrics
from shared.store.metrics import read_metrics


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
        except BaseException as exc:
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
    assert sum(v for k, v in counts.items() if k.startswith(("lag.le_", "lag.gt_"))) == 240


def test_insert_ignore_says_whether_it_inserted(engine: Engine) -> None:
    """The receiver renews an expired inbox key and silence adds to its row only when the insert
    was skipped: the count must be exact on both databases (psycopg's rowcount is -1 here)."""
    from datetime import datetime, timedelta

    from shared.store.engine import insert_ignore, write_transaction
    from shared.store.schema import inbox

    now = datetime.now(UTC)
    record = {"tenant_id": "north", "idempotency_key": "k", "event_type": "e", "received_at": now,
              "expires_at": now + timedelta(days=1)}
    with write_transaction(engine) as conn:
        assert insert_ignore(conn, inbox, [record]) == 1
        assert insert_ignore(conn, inbox, [record]) == 0
        assert insert_ignore(conn, inbox, []) == 0


def test_the_webhook_rate_counts_the_last_minutes_and_old_minutes_are_dropped(engine: Engine) -> None:
    from datetime import datetime, timedelta

    from shared.metrics import minute_bucket
    from shared.store.engine import write_transaction
    from shared.store.metrics import increment, prune_minutes, webhook_rate

    now = datetime(2026, 11, 23, 21, 30, 20, tzinfo=UTC)
    with write_transaction(engine) as conn:
        for minutes_ago, n in ((0, 3), (14, 12), (15, 100), (70, 7)):  # 15 and 70 min ago: outside
            at = now - timedelta(minutes=minutes_ago)
            increment(conn, {("north", minute_bucket(at)): n}, at)
        increment(conn, {("south", minute_bucket(now)): 50, ("north", "webhook.received"): 1}, now - timedelta(hours=3))
    with engine.connect() as conn:
        assert webhook_rate(conn, "north", now) == 1.0  # (3 + 12) / 15 minutes; south's are its own
        assert webhook_rate(conn, "south", now) == 50 / 15 and webhook_rate(conn, "east", now) == 0
    with write_transaction(engine) as conn:  # minutes written over an hour ago go; other counters stay
        assert prune_minutes(conn, now - timedelta(hours=1)) == 2  # north's 70-minute one and south's
    with engine.connect() as conn:
        left = read_metrics(conn, "north")
    assert left["webhook.received"] == 1 and sum(1 for k in left if k.startswith("webhook.minute.")) == 3


def test_webhooks_per_hour_for_a_day_and_older_hours_are_dropped(engine: Engine) -> None:
    from datetime import datetime, timedelta

    from shared.metrics import hour_bucket
    from shared.store.engine import write_transaction
    from shared.store.metrics import increment, prune_hours, webhook_hours

    now = datetime(2026, 11, 23, 21, 30, 20, tzinfo=UTC)
    with write_transaction(engine) as conn:
        for hours_ago, n in ((0, 3), (23, 12), (24, 100), (30, 7)):  # 24 and 30 hours ago: outside the chart
            at = now - timedelta(hours=hours_ago)
            increment(conn, {("north", hour_bucket(at)): n}, at)
    with engine.connect() as conn:
        hours = webhook_hours(conn, "north", now)
        assert len(hours) == 24 and hours[-1] == (datetime(2026, 11, 23, 21, tzinfo=UTC), 3)
        assert hours[0] == (datetime(2026, 11, 22, 22, tzinfo=UTC), 12) and sum(n for _, n in hours) == 15
    with write_transaction(engine) as conn:  # kept a day and an hour: the 30-hour-old count goes
        assert prune_hours(conn, now - timedelta(hours=25)) == 1
