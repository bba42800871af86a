"""Read an authenticated webhook body into the changes it announces (ids only, never content).

Shapes: a FHIR Subscriptions Backport notification (R4 ``Parameters`` or R4B/R5
``SubscriptionStatus``, first entry of a ``history`` Bundle); ``{"event"|"action": …, "data":
{…}}``; or a bare FHIR resource. Depth and array caps are checked before anything is trusted;
every failure is a WebhookRejected(400, reason).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.records import is_fhir_id
from shared.timebounds import instant_in_range
from shared.webhooks.rejected import WebhookRejected

MAX_DEPTH = 32
MAX_ARRAY = 1000
TYPES = {"practitioner": "Practitioner", "practitionerrole": "PractitionerRole", "patient": "Patient",
         "appointment": "Appointment", "invoice": "Invoice"}
ACTIONS = ("create", "update", "delete")
# Event names as senders spell them: Halaxy's endpoints (appointment-update) and past-tense names
# (appointment.created, invoice.paid). A cancellation or a payment is an update: the re-read of
# the resource decides what the row becomes.
ACTION_WORDS = {"create": "create", "created": "create", "update": "update", "updated": "update",
                "delete": "delete", "deleted": "delete", "cancelled": "update", "canceled": "update",
                "paid": "update"}
_EVENT = re.compile(r"^([a-z]+)[-.]([a-z]+)$")


@dataclass(frozen=True)
class Event:
    type: str
    id: str
    action: str | None
    version: str | None = None
    event_number: int | None = None
    timestamp: datetime | None = None


# The Subscriptions Backport IG's notification types. Only event notifications (and a query-event
# answer) announce changes; a handshake, a heartbeat or a status answer is acknowledged, and its
# events-since-subscription-start still feeds gap detection.
CHANGE_TYPES = ("event-notification", "query-event")
NOTIFICATION_TYPES = ("handshake", "heartbeat", "event-notification", "query-status", "query-event")


@dataclass(frozen=True)
class BackportStatus:
    subscription: str | None
    events_since_start: int | None
    event_numbers: list[int] = field(default_factory=list)
    type: str = "event-notification"
    # Events without a focus: the subscription's content is "empty", so they cannot say what
    # changed; the receiver starts an incremental reconcile of the route's type instead.
    unfocused: int = 0

    @property
    def announces_changes(self) -> bool:
        return self.type in CHANGE_TYPES


def parse_event_name(name: str) -> tuple[str, str]:
    """``appointment-update`` or ``appointment.cancelled`` (the route's {event}) → ("Appointment", "update")."""
    match = _EVENT.match(name.lower())
    if not match or match.group(1) not in TYPES or match.group(2) not in ACTION_WORDS:
        raise WebhookRejected(400, "unknown-event")
    return TYPES[match.group(1)], ACTION_WORDS[match.group(2)]


def parse_notification(body: bytes, event_name: str) -> tuple[list[Event], BackportStatus | None]:
    route_type, route_action = parse_event_name(event_name)
    try:
        document = json.loads(body)
    except RecursionError:
        raise WebhookRejected(400, "json-too-deep") from None
    except ValueError:
        raise WebhookRejected(400, "malformed-json") from None
    _check_shape(document)
    if not isinstance(document, dict):
        raise WebhookRejected(400, "unrecognised-body")
    status = backport_status(document)
    if status is not None:
        events = _backport_events(document, route_action)
        if not status.announces_changes or (not events and status.unfocused):
            return events, status  # acknowledged (a handshake, a heartbeat), or a reconcile of the route's type
    elif isinstance(document.get("data"), dict):
        events = [_json_event(document, route_type, route_action)]
    elif isinstance(document.get("resourceType"), str):
        events = [_resource_event(document, route_action)]
    else:
        raise WebhookRejected(400, "unrecognised-body")
    if not events:
        raise WebhookRejected(400, "no-events")
    if any(e.type != route_type for e in events):
        raise WebhookRejected(400, "event-type-mismatch")  # one endpoint per event type
    return events, status


def _check_shape(document: Any) -> None:
    stack = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise WebhookRejected(400, "json-too-deep")
        if isinstance(node, list):
            if len(node) > MAX_ARRAY:
                raise WebhookRejected(400, "json-array-too-long")
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, dict):
            stack.extend((item, depth + 1) for item in node.values())


def _status_resource(bundle: Any) -> dict[str, Any] | None:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return None
    entries = bundle.get("entry")
    first = entries[0] if isinstance(entries, list) and entries and isinstance(entries[0], dict) else {}
    resource = first.get("resource")
    if isinstance(resource, dict) and resource.get("resourceType") in ("Parameters", "SubscriptionStatus"):
        return resource
    return None


def backport_status(bundle: Any) -> BackportStatus | None:
    """The notification's subscription, events-since-start and event numbers, or None."""
    resource = _status_resource(bundle)
    if resource is None:
        return None
    if resource["resourceType"] == "SubscriptionStatus":
        subscription = _reference(resource.get("subscription"))
        since = _int(resource.get("eventsSinceSubscriptionStart"))
        kind = resource.get("type")
        events = resource.get("notificationEvent")
        events = [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []
        numbers = [_int(e.get("eventNumber")) for e in events]
        unfocused = sum(1 for e in events if e.get("focus") is None)
    else:
        params = _parameters(resource)
        subscription = _reference((params.get("subscription") or [{}])[0].get("valueReference"))
        since = _int(_value((params.get("events-since-subscription-start") or [{}])[0]))
        kind = _value((params.get("type") or [{}])[0])
        parts = [_parts(p) for p in params.get("notification-event", [])]
        numbers = [_int(_value(p.get("event-number", {}))) for p in parts]
        unfocused = sum(1 for p in parts if "focus" not in p)
    if kind is None:
        kind = "event-notification"  # senders before the IG named the type announced events
    if kind not in NOTIFICATION_TYPES:
        raise WebhookRejected(400, "unknown-notification-type")
    return BackportStatus(subscription, since, [n for n in numbers if n is not None], kind, unfocused)


def _backport_events(bundle: dict[str, Any], action: str) -> list[Event]:
    resource = _status_resource(bundle) or {}
    if resource.get("resourceType") == "SubscriptionStatus":
        raw = [(e.get("eventNumber"), e.get("timestamp"), e.get("focus"))
               for e in resource.get("notificationEvent") or [] if isinstance(e, dict)]
    else:
        raw = []
        for param in _parameters(resource).get("notification-event", []):
            parts = _parts(param)
            raw.append((_value(parts.get("event-number", {})), _value(parts.get("timestamp", {})),
                        parts["focus"].get("valueReference") if "focus" in parts else None))
    events = []
    for number, stamp, focus in raw:
        if focus is None:
            continue  # "empty" content: counted in BackportStatus.unfocused
        kind, rid, version = _split_reference(_reference(focus))
        events.append(Event(kind, rid, action, version, _int(number), _instant(stamp)))
    return events


def _json_event(document: dict[str, Any], route_type: str, route_action: str) -> Event:
    data = document["data"]
    name = document.get("event", document.get("action"))
    action = route_action
    if isinstance(name, str):
        match = _EVENT.match(name.lower())
        action = ACTION_WORDS.get(match.group(2), action) if match else action
    kind = data.get("resourceType", route_type)
    version = data.get("versionId", (data.get("meta") or {}).get("versionId") if isinstance(data.get("meta"), dict) else None)
    return Event(_known_type(kind), _valid_id(data.get("id")), action, _version(version), None,
                 _instant(document.get("timestamp")))


def _resource_event(resource: dict[str, Any], action: str) -> Event:
    raw_meta = resource.get("meta")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    return Event(_known_type(resource["resourceType"]), _valid_id(resource.get("id")), action,
                 _version(meta.get("versionId")), None, _instant(meta.get("lastUpdated")))


def _parameters(resource: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for param in resource.get("parameter") or []:
        if isinstance(param, dict) and isinstance(param.get("name"), str):
            out.setdefault(param["name"], []).append(param)
    return out


def _parts(param: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in param.get("part") or [] if isinstance(p, dict) and isinstance(p.get("name"), str)}


def _value(param: dict[str, Any]) -> Any:
    return next((v for k, v in param.items() if k.startswith("value")), None)


def _reference(value: Any) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) else None


def _split_reference(ref: str | None) -> tuple[str, str, str | None]:
    """A focus reference — relative (``Patient/1``), absolute (a full-resource notification's
    ``https://host/fhir/Patient/1``) or versioned (``…/Patient/1/_history/3``) — as (type, id,
    version). Only ids are taken: a full-resource notification's body is never trusted, the
    apply function re-reads the resource."""
    path, _, version = (ref or "").partition("/_history/")
    parts = path.rstrip("/").split("/")
    if len(parts) < 2:
        raise WebhookRejected(400, "bad-focus")
    return _known_type(parts[-2]), _valid_id(parts[-1]), _version(version.strip("/")) if version else None


def _known_type(kind: Any) -> str:
    if not isinstance(kind, str) or kind.lower() not in TYPES:
        raise WebhookRejected(400, "unknown-resource-type")
    return TYPES[kind.lower()]


def _valid_id(value: Any) -> str:
    if not is_fhir_id(value):
        raise WebhookRejected(400, "bad-resource-id")
    return value


def _version(value: Any) -> str | None:
    return str(value)[:64] if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if instant_in_range(stamp) else None  # out of range: as if the sender gave none
