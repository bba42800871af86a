"""Backport gap detection on both databases: numbers missing past the grace period are a gap,
late and out-of-order deliveries are not, and a gap turns into a targeted incremental reconcile."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import azure.functions as func
import pytest
from sqlalchemy import Engine, select
from sqlalchemy import func as sql

from devtools.sandbox.data import Change
from devtools.sandbox.notify import halaxy_bundle
from shared.queues.memory import InMemoryQueues
from shared.queues.messages import ReconcileMessage, decode
from shared.store.engine import write_transaction
from shared.store.schema import webhook_events, webhook_subscriptions
from shared.store.webhook_events import Gap, record_notification, settle_gaps
from shared.webhooks.notifications import BackportStatus
from tests.fakes import installed_runtime, registered_functions

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
GRACE = timedelta(seconds=180)
SUB = "https://au-api.halaxy.example/main/Subscription/s1"


def deliver(engine: Engine, *numbers: int, since: int | None = None, at: datetime = T0) -> None:
    status = BackportStatus(SUB, since if since is not None else max(numbers, default=0), list(numbers))
    with write_transaction(engine) as conn:
        record_notification(conn, "north", status.subscription, status.event_numbers, status.events_since_start,
                            {"Appointment"} if numbers else set(), at)


def settle(engine: Engine, at: datetime) -> list[Gap]:
    with write_transaction(engine) as conn:
        return settle_gaps(conn, "north", at, GRACE)


def subscription(engine: Engine) -> tuple[int, int, int]:
    s = webhook_subscriptions.c
    with engine.connect() as conn:
        row = conn.execute(select(s.highest_event, s.checked_through, s.gaps)).one()
        left = conn.execute(select(sql.count()).select_from(webhook_events)).scalar_one()
    return row.checked_through, row.gaps, left


def test_late_and_out_of_order_deliveries_are_not_a_gap(engine: Engine) -> None:
    deliver(engine, 1)  # the first one seen: earlier numbers are history
    deliver(engine, 3)
    assert settle(engine, T0) == []  # 2 is missing: noticed, not yet a gap
    deliver(engine, 2, at=T0 + timedelta(seconds=20))  # the sender's retry
    deliver(engine, 3, at=T0 + timedelta(seconds=21))  # and a duplicate: harmless
    assert settle(engine, T0 + GRACE) == []
    assert subscription(engine) == (3, 0, 0)  # settled through 3, nothing kept


def test_numbers_still_missing_after_the_grace_period_are_a_gap(engine: Engine) -> None:
    deliver(engine, 5)
    deliver(engine, 8)
    assert settle(engine, T0) == []
    assert settle(engine, T0 + GRACE - timedelta(seconds=1)) == []
    deliver(engine, 9, at=T0 + timedelta(seconds=100))  # newer than the gap: not part of it
    assert settle(engine, T0 + GRACE) == [Gap(SUB, ("Appointment",), 2)]  # 6 and 7
    assert subscription(engine) == (8, 2, 1)  # 9 waits for its own settling
    assert settle(engine, T0 + GRACE) == []
    assert subscription(engine) == (9, 2, 0)


def test_a_heartbeat_reveals_events_lost_at_the_tail(engine: Engine) -> None:
    deliver(engine, 1, 2)
    deliver(engine, since=4)  # heartbeat: no events, but the source has numbered four
    assert settle(engine, T0) == []
    assert settle(engine, T0 + GRACE) == [Gap(SUB, ("Appointment",), 2)]


TENANTS = [{"id": "alpha", "name": "A", "fhir_base_url": "http://127.0.0.1:9/main", "client_id": "c",
            "client_secret": "s", "webhook_scheme": "halaxy", "webhook_secrets": ["alpha-secret"],
            "webhook_header": "X-Halaxy-Secret", "schedule": "0 0 0 1 1 *", "hot_schedule": "0 0 0 1 1 *",
            "full_schedule": "0 0 0 1 1 *"}]


@pytest.fixture
def app_runtime(database_url: str, tmp_path: Path) -> Iterator[InMemoryQueues]:
    queues = InMemoryQueues()
    with installed_runtime(database_url, tmp_path, TENANTS, queues):
        yield queues


def test_a_gap_in_delivered_webhooks_enqueues_a_targeted_incremental_and_is_counted(
        app_runtime: InMemoryQueues) -> None:
    from shared.bootstrap import runtime
    from shared.service.reconciles import fan_out, reconcile_gaps
    from shared.store.metrics import read_metrics

    now = datetime.now(UTC)
    for number in (1, 2, 4):  # 3 never arrives
        body = json.dumps(halaxy_bundle(Change("Appointment", f"AP-{number}", "update", 2, now), "http://x/main",
                                        number)).encode()
        request = func.HttpRequest("POST", "http://localhost/api/webhooks/alpha/appointment-update", body=body,
                                   headers={"Content-Type": "application/fhir+json", "X-Halaxy-Secret": "alpha-secret"},
                                   route_params={"tenant": "alpha", "event": "appointment-update"})
        assert registered_functions()["receive_webhook"].get_user_function()(request).status_code == 202
    app_runtime.receive("changes", max_messages=10, visibility_timeout=3600)  # not under test here
    assert reconcile_gaps(runtime(), "alpha", now) == []  # noticed, within the grace period
    fan_out(runtime(), now + GRACE)  # the timer settles it (and, for a tenant that never ran, schedules the rest)
    queued = [decode(m.text, ReconcileMessage) for m in app_runtime.receive("reconcile", max_messages=10,
                                                                             visibility_timeout=30)]
    assert [m for m in queued if m.types] == [ReconcileMessage(tenant="alpha", reconcile="incremental",
                                                               types=["Appointment"])]
    rt = runtime()
    rt.metrics.flush(rt.engine)
    with rt.engine.connect() as conn:
        counts = read_metrics(conn, "alpha")
    assert (counts["webhook.gap_events"], counts["webhook.gap_reconciles"]) == (1, 1)
