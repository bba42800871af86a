"""Reading notification bodies into changes: Backport (R4 and R4B shapes), JSON events, resources."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from devtools.sandbox.data import Change
from devtools.sandbox.notify import halaxy_bundle, json_event
from shared.webhooks import WebhookRejected
from shared.webhooks.notifications import backport_status, parse_notification

AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def reason(body: bytes, event: str = "appointment-update") -> str:
    with pytest.raises(WebhookRejected) as info:
        parse_notification(body, event)
    assert info.value.status == 400
    return info.value.reason


def test_the_sandbox_backport_bundle_reads_as_one_id_only_change() -> None:
    bundle = halaxy_bundle(Change("Appointment", "AP-9", "update", 3, AT), "http://127.0.0.1:1/main", 41)
    events, status = parse_notification(json.dumps(bundle).encode(), "appointment-update")
    assert [(e.type, e.id, e.action, e.event_number, e.timestamp) for e in events] == [
        ("Appointment", "AP-9", "update", 41, AT)]
    assert status is not None and status.events_since_start == 41 and status.event_numbers == [41]
    assert status.subscription == "http://127.0.0.1:1/main/Subscription/sub-appointment-update"


def test_r4b_subscription_status_with_several_events() -> None:
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": {
        "resourceType": "SubscriptionStatus", "subscription": {"reference": "Subscription/x"},
        "eventsSinceSubscriptionStart": "12", "notificationEvent": [
            {"eventNumber": "11", "timestamp": "2026-03-04T05:06:07Z", "focus": {"reference": "Invoice/IN-1"}},
            {"eventNumber": "12", "focus": {"reference": "https://h/main/Invoice/IN-2/_history/4"}}]}}]}
    events, status = parse_notification(json.dumps(bundle).encode(), "invoice-delete")
    assert [(e.type, e.id, e.action, e.event_number) for e in events] == [
        ("Invoice", "IN-1", "delete", 11), ("Invoice", "IN-2", "delete", 12)]
    assert status is not None and backport_status(bundle) == status and status.event_numbers == [11, 12]


def test_json_events_and_bare_resources() -> None:
    body = json.dumps(json_event(Change("Patient", "PT-1", "create", 1, AT))).encode()
    ((event,), status) = parse_notification(body, "patient-create")
    assert (event.type, event.id, event.action, event.version, status) == ("Patient", "PT-1", "create", "1", None)
    action_style = json.dumps({"action": "appointment.delete", "data": {"resourceType": "Appointment", "id": "A-1"}})
    assert parse_notification(action_style.encode(), "appointment-delete")[0][0].action == "delete"
    resource = json.dumps({"resourceType": "Appointment", "id": "A-2", "meta": {"versionId": "5"}})
    assert parse_notification(resource.encode(), "appointment-update")[0][0].version == "5"


@pytest.mark.parametrize(("body", "event", "expected"), [
    (b"{", "appointment-update", "malformed-json"),
    (b"\xff\xfe", "appointment-update", "malformed-json"),
    (b"[" * 100_000 + b"]" * 100_000, "appointment-update", "json-too-deep"),
    (json.dumps({"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}).encode(), "appointment-update",
     "json-too-deep"),
    (json.dumps({"data": {"id": "A"}, "pad": list(range(1001))}).encode(), "appointment-update", "json-array-too-long"),
    (b"[]", "appointment-update", "unrecognised-body"),
    (b'{"hello": 1}', "appointment-update", "unrecognised-body"),
    (b'{"data": {"resourceType": "Appointment", "id": "bad id"}}', "appointment-update", "bad-resource-id"),
    # Ids of dots alone are path segments, not ids (a re-read of Patient/.. fetched the FHIR base).
    (b'{"resourceType": "Patient", "id": ".."}', "patient-update", "bad-resource-id"),
    (b'{"data": {"resourceType": "Patient", "id": "."}}', "patient-update", "bad-resource-id"),
    (json.dumps({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "SubscriptionStatus",
                 "notificationEvent": [{"focus": {"reference": "Patient/.."}}]}}]}).encode(), "patient-update",
     "bad-resource-id"),
    (b'{"data": {"resourceType": "Observation", "id": "O-1"}}', "appointment-update", "unknown-resource-type"),
    (b'{"data": {"resourceType": "Patient", "id": "P-1"}}', "appointment-update", "event-type-mismatch"),
    (b'{"data": {"id": "A-1"}}', "appointment-explode", "unknown-event"),
    (b'{"data": {"id": "A-1"}}', "../../admin", "unknown-event"),
    (json.dumps({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "SubscriptionStatus",
                 "notificationEvent": []}}]}).encode(), "appointment-update", "no-events"),
    (json.dumps({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "SubscriptionStatus",
                 "notificationEvent": [{"focus": {"reference": "nothing"}}]}}]}).encode(), "appointment-update",
     "bad-focus"),
])
def test_malformed_bodies_are_400_with_a_reason(body: bytes, event: str, expected: str) -> None:
    assert reason(body, event) == expected


def test_an_event_time_at_the_calendars_edge_is_read_as_no_time() -> None:
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": {
        "resourceType": "SubscriptionStatus", "subscription": {"reference": "Subscription/x"},
        "eventsSinceSubscriptionStart": "2", "notificationEvent": [
            {"eventNumber": "1", "timestamp": "0001-01-01T00:00:00+14:00", "focus": {"reference": "Patient/PT-1"}},
            {"eventNumber": "2", "timestamp": "9999-12-31T23:59:59-12:00", "focus": {"reference": "Patient/PT-2"}}]}}]}
    events, _status = parse_notification(json.dumps(bundle).encode(), "patient-update")
    assert [e.timestamp for e in events] == [None, None]  # a lag from there would overflow; the receipt time serves


@pytest.mark.parametrize(("name", "expected"), [
    ("appointment-update", ("Appointment", "update")), ("Appointment.Created", ("Appointment", "create")),
    ("appointment.cancelled", ("Appointment", "update")), ("appointment.canceled", ("Appointment", "update")),
    ("invoice.paid", ("Invoice", "update")), ("invoice.deleted", ("Invoice", "delete")),
    ("patient-create", ("Patient", "create"))])
def test_event_names_present_and_past_tense(name: str, expected: tuple[str, str]) -> None:
    from shared.webhooks.notifications import parse_event_name

    assert parse_event_name(name) == expected


@pytest.mark.parametrize("name", ["appointment.exploded", "appointment", "weather.updated", "appointment.paid.twice"])
def test_other_event_names_are_unknown(name: str) -> None:
    from shared.webhooks.notifications import parse_event_name

    with pytest.raises(WebhookRejected) as info:
        parse_event_name(name)
    assert info.value.reason == "unknown-event"
