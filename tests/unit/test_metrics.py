"""Metrics buffering and lag buckets, with an injected clock and a fake engine that fails on cue."""
from __future__ import annotations

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from shared.metrics import LAG_OVER, Metrics, lag_bucket, lag_percentile
from shared.store.schema import metadata


@pytest.mark.parametrize(("seconds", "bucket"), [(0, "lag.le_100"), (-3, "lag.le_100"), (0.1, "lag.le_100"),
                                                 (0.1001, "lag.le_250"), (0.99, "lag.le_1000"),
                                                 (299.9, "lag.le_300000"), (301, LAG_OVER)])
def test_lag_buckets(seconds: float, bucket: str) -> None:
    assert lag_bucket(seconds) == bucket


def test_lag_percentile_is_the_bucket_bound_holding_the_quantile() -> None:
    counts = {"lag.count": 100, "lag.le_100": 50, "lag.le_250": 45, "lag.le_1000": 4, LAG_OVER: 1}
    assert lag_percentile(counts, 0.5) == 0.1
    assert lag_percentile(counts, 0.95) == 0.25
    assert lag_percentile(counts, 0.99) == 1.0
    assert lag_percentile(counts, 1.0) == float("inf")
    assert lag_percentile({}, 0.5) is None


def test_counts_are_written_at_most_once_per_interval_and_kept_when_a_flush_fails(tmp_path: object) -> None:
    from shared.store.metrics import read_metrics

    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    now = [0.0]
    metrics = Metrics(interval=1.0, clock=lambda: now[0])
    metrics.add("t", "webhook.received")
    metrics.maybe_flush(engine)  # too soon: nothing written
    with engine.connect() as conn:
        assert read_metrics(conn, "t") == {}
    now[0] = 1.5
    metrics.observe_lag("t", 0.2)
    metrics.maybe_flush(engine)
    with engine.connect() as conn:
        assert read_metrics(conn, "t") == {"lag.count": 1, "lag.le_250": 1, "lag.sum_ms": 200, "webhook.received": 1}
    metrics.add("t", "webhook.received", 2)
    broken = create_engine("sqlite://")  # no tables: the flush fails
    with pytest.raises(OperationalError):  # no such table
        metrics.flush(broken)
    now[0] = 3.0
    metrics.maybe_flush(broken)  # swallowed, logged; still pending
    metrics.flush(engine)
    with engine.connect() as conn:
        assert read_metrics(conn, "t")["webhook.received"] == 3
