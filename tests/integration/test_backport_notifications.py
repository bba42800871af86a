"""Every Subscriptions Backport notification type and content level through the webhook HTTP
function, in both shapes the IG defines (R4 ``Parameters``, R4B ``SubscriptionStatus``), on both
databases: handshakes, heartbeats and status answers are acknowledged (a refusal can make the
sending server deactivate the subscription); id-only and full-resource events are enqueued by id;
an empty event, which cannot say what changed, queues one incremental reconcile of its type."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from sqlalchemy import select

from shared.queues.memory import InMemoryQueues
from shared.queues.messages import ChangeMessage, ReconcileMessage, decode
from shared.store.schema import webhook_subscriptions
from tests.fakes import ManualClock, installed_runtime, registered_functions

TENANTS = [{"id": "alpha", "name": "A", "fhir_base_url": "http://127.0.0.1:9/main", "client_id": "c",
            "client_secret": "s", "webhook_scheme": "halaxy", "webhook_secrets": ["alpha-secret"],
            "webhook_header": "X-Halaxy-Secret"}]
HEADERS = {"Content-Type": "application/fhir+json", "X-Halaxy-Secret": "alpha-secret"}
SUBSCRIPTION = "https://source.example/fhir/Subscription/appointments"
FOCUS = "https://source.example/fhir/Appointment/AP-7"
SHAPES = ("r4", "r4b")


def notification(shape: str, kind: str, content: str = "id-only", number: int = 5) -> bytes:
    """A notification Bundle as the IG's examples build it."""
    focus = f"{FOCUS}/_history/3" if content == "full-resource" else FOCUS
    with_event = kind in ("event-notification", "query-event")
    if shape == "r4":
        part: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(number)},
                {"name": "timestamp", "valueInstant": "2026-03-04T05:06:07Z"}]
        if content != "empty":
            part.append({"name": "focus", "valueReference": {"reference": focus}})
        status: dict[str, Any] = {"resourceType": "Parameters", "parameter": [
            {"name": "subscription", "valueReference": {"reference": SUBSCRIPTION}},
            {"name": "topic", "valueCanonical": "http://example.org/SubscriptionTopic/appointment"},
            {"name": "status", "valueCode": "active"}, {"name": "type", "valueCode": kind},
            {"name": "events-since-subscription-start", "valueString": str(number)},
            *([{"name": "notification-event", "part": part}] if with_event else [])]}
    else:
        event: dict[str, Any] = {"eventNumber": str(number), "timestamp": "2026-03-04T05:06:07Z"}
        if content != "empty":
            event["focus"] = {"reference": focus}
        status = {"resourceType": "SubscriptionStatus", "status": "active", "type": kind,
                  "eventsSinceSubscriptionStart": str(number), "subscription": {"reference": SUBSCRIPTION},
                  "topic": "http://example.org/SubscriptionTopic/appointment",
                  **({"notificationEvent": [event]} if with_event else {})}
    entries: list[dict[str, Any]] = [{"fullUrl": "urn:uuid:7d1c5a1e-0000-4000-8000-000000000001", "resource": status}]
    if content == "full-resource" and with_event:  # the resource itself: never trusted, re-read by id
        entries.append({"fullUrl": FOCUS, "resource": {"resourceType": "Appointment", "id": "AP-7",
                                                       "meta": {"versionId": "3"}, "status": "booked"},
                        "request": {"method": "PUT", "url": "Appointment/AP-7"}, "response": {"status": "200"}})
    return json.dumps({"resourceType": "Bundle", "type": "history", "entry": entries}).encode()


CLOCK = ManualClock()


@pytest.fixture
def queues(database_url: str, tmp_path: Path) -> Iterator[InMemoryQueues]:
    CLOCK.now = 0.0
    queues = InMemoryQueues(clock=CLOCK)
    with installed_runtime(database_url, tmp_path, TENANTS, queues):
        yield queues


def post(body: bytes, event: str = "appointment-update") -> tuple[int, dict[str, Any]]:
    request = func.HttpRequest("POST", f"http://localhost/api/webhooks/alpha/{event}", body=body, headers=HEADERS,
                               route_params={"tenant": "alpha", "event": event})
    response = registered_functions()["receive_webhook"].get_user_function()(request)
    return response.status_code, json.loads(response.get_body())


def subscription_state() -> tuple[int, str] | None:
    from shared.bootstrap import runtime

    s = webhook_subscriptions.c
    with runtime().engine.connect() as conn:
        row = conn.execute(select(s.highest_event, s.resource_types).where(s.subscription == SUBSCRIPTION)).first()
    return (row.highest_event, row.resource_types) if row else None


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["handshake", "heartbeat", "query-status"])
def test_handshakes_heartbeats_and_status_answers_are_acknowledged(queues: InMemoryQueues, shape: str,
                                                                   kind: str) -> None:
    assert post(notification(shape, kind, number=4)) == (200, {"acknowledged": kind})
    assert queues.count("changes") == 0 and queues.count("reconcile") == 0
    # Its events-since-subscription-start still counts for gap detection.
    assert subscription_state() == (4, "Appointment")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("kind", "content", "version"), [
    ("event-notification", "id-only", None), ("event-notification", "full-resource", "3"),
    ("query-event", "id-only", None)])
def test_id_only_and_full_resource_events_are_enqueued_by_id(queues: InMemoryQueues, shape: str, kind: str,
                                                             content: str, version: str | None) -> None:
    assert post(notification(shape, kind, content)) == (202, {"accepted": 1})
    (message,) = queues.receive("changes", max_messages=5, visibility_timeout=30)
    change = decode(message.text, ChangeMessage)
    assert (change.type, change.id, change.action, change.version) == ("Appointment", "AP-7", "update", version)
    assert "booked" not in message.text  # a full-resource body is not carried: the apply re-reads it


@pytest.mark.parametrize("shape", SHAPES)
def test_empty_events_queue_one_incremental_reconcile_of_their_type_per_burst(queues: InMemoryQueues,
                                                                              shape: str) -> None:
    first = post(notification(shape, "event-notification", "empty", number=10))
    assert first == (202, {"accepted": 0, "reconcile": "Appointment", "reconcileQueued": True})
    for number in range(11, 16):  # the rest of the burst: covered by the one reconcile
        assert post(notification(shape, "event-notification", "empty", number=number))[1]["reconcileQueued"] is False
    assert queues.count("changes") == 0 and queues.count("reconcile") == 1
    # Delayed until its window (which ends two minutes before it runs) covers the burst: the lag,
    # the 30 s debounce and 10 s more.
    CLOCK.now = 159
    assert queues.receive("reconcile", max_messages=5, visibility_timeout=30) == []
    CLOCK.now = 161
    (message,) = queues.receive("reconcile", max_messages=5, visibility_timeout=30)
    assert decode(message.text, ReconcileMessage) == ReconcileMessage(tenant="alpha", reconcile="incremental",
                                                                      types=["Appointment"])


def test_an_unknown_notification_type_is_refused(queues: InMemoryQueues) -> None:
    assert post(notification("r4b", "weather-report")) == (400, {"error": "unknown-notification-type"})
