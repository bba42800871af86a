"""REST webhook events and the address allowlist: pure parsing, every refusal with its reason."""
from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.rest.load import load_spec, spec_path
from shared.webhooks.allowlist import check_allowed, client_address
from shared.webhooks.rejected import WebhookRejected
from shared.webhooks.rest_events import parse_rest_event

PPB = load_spec(spec_path("ppb-premises", None))
HOOK, PREMISES = PPB.webhook, PPB.entity("premises")


def parse(event: Any) -> Any:
    assert HOOK is not None
    return parse_rest_event(json.dumps(event).encode(), HOOK, PREMISES)


def test_a_ppb_event_gives_its_key_action_time_and_record() -> None:
    event = parse({"action": "deleted", "timestamp": "2026-12-03T10:00:00Z", "webhookId": "w-1",
                   "data": {"premiseid": 4021, "premisename": "X"}})
    assert (event.key, event.entity, event.id, event.action, event.at) == (
        "event:w-1", "premises", "4021", "delete", datetime(2026, 12, 3, 10, tzinfo=UTC))
    assert parse({"action": "created", "webhookId": 7, "data": {"premiseid": 1}}).action == "update"
    assert parse({"action": "updated", "webhookId": 7, "timestamp": "2026-12-03T13:00:00", "data": {"premiseid": 1}}
                 ).at == datetime(2026, 12, 3, 13, tzinfo=UTC)  # a time without a zone is read as UTC


@pytest.mark.parametrize(("body", "reason"), [
    (b"{nope", "malformed-json"),
    (b"[1, 2]", "unrecognised-body"),
    (json.dumps({"action": "updated", "data": {"premiseid": 1}}).encode(), "no-event-id"),
    (json.dumps({"action": "updated", "webhookId": True, "data": {"premiseid": 1}}).encode(), "no-event-id"),
    (json.dumps({"action": "updated", "webhookId": "x" * 191, "data": {"premiseid": 1}}).encode(), "no-event-id"),
    (json.dumps({"webhookId": "w", "data": {"premiseid": 1}}).encode(), "no-action"),
    (json.dumps({"action": "updated", "webhookId": "w", "data": [1]}).encode(), "no-data"),
    (json.dumps({"action": "updated", "webhookId": "w", "data": {"premiseid": None}}).encode(), "bad-resource-id"),
    (json.dumps({"action": "updated", "webhookId": "w", "timestamp": "noon", "data": {"premiseid": 1}}).encode(),
     "bad-timestamp"),
])
def test_each_bad_event_is_refused_with_a_reason(body: bytes, reason: str) -> None:
    assert HOOK is not None
    with pytest.raises(WebhookRejected) as caught:
        parse_rest_event(body, HOOK, PREMISES)
    assert (caught.value.status, caught.value.reason) == (400, reason)


@pytest.mark.parametrize(("header", "address"), [
    ("10.1.2.3", "10.1.2.3"), ("10.1.2.3:51234", "10.1.2.3"), ("::1", "::1"), ("[2001:db8::5]:443", "2001:db8::5"),
    ("", None), ("not an address", None), ("10.1.2.3, 10.9.9.9", None)])
def test_the_client_address_comes_from_the_platforms_header(header: str, address: str | None) -> None:
    found = client_address({"Client-IP": header} if header else {})
    assert found == (ipaddress.ip_address(address) if address else None)


def test_the_allowlist_lets_in_only_its_networks() -> None:
    networks = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
    check_allowed([], {})  # no allowlist: anyone
    check_allowed(networks, {"client-ip": "10.200.0.1:999"})
    check_allowed(networks, {"client-ip": "[2001:db8::1]:1"})
    check_allowed(networks, {"client-ip": "::ffff:10.0.0.9"})  # IPv4 as IPv6
    for headers, reason in (({"client-ip": "192.168.0.1"}, "ip-not-allowed"), ({}, "client-ip-unknown"),
                            ({"x-forwarded-for": "10.0.0.1"}, "client-ip-unknown")):
        with pytest.raises(WebhookRejected) as caught:
            check_allowed(networks, headers)
        assert (caught.value.status, caught.value.reason) == (403, reason)
