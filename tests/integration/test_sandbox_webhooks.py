"""Churn emits the notifications a real source would, signed per scheme, retried until delivered."""
from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from devtools.sandbox.data import SandboxData
from devtools.sandbox.notify import FIRING, WebhookConfig, require_loopback
from devtools.sandbox.server import Sandbox, SandboxConfig
from devtools.synthetic import SyntheticCounts
from shared.webhooks.signatures import hmac_sha256_hex

ANCHOR = datetime(2026, 1, 15, 9, tzinfo=UTC)
WHSEC = "whsec_" + base64.b64encode(b"k" * 24).decode()


class Receiver:
    """A loopback endpoint recording what arrives; it can fail the first N attempts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = 503 if len(receiver.received) <= receiver.fail_first else 202
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/webhooks/demo/{{event}}"

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def sandbox_with(webhook: WebhookConfig) -> Sandbox:
    data = SandboxData(SyntheticCounts(2, 30, 60, 20), seed=4, anchor=ANCHOR)
    return Sandbox(data, SandboxConfig(webhook=webhook)).start()


def churn(box: Sandbox, **spec: int) -> list[dict[str, Any]]:
    changes = httpx.post(f"http://127.0.0.1:{box.port}/_sandbox/churn", json=spec).json()["changes"]
    assert box.notifier is not None and box.notifier.drain(30)
    return changes


def test_halaxy_backport_notifications_with_static_secret(receiver: Receiver) -> None:
    box = sandbox_with(WebhookConfig(receiver.url, "halaxy", "s3cret", backoff=0.01))
    try:
        changes = churn(box, creates=6, updates=10, deletes=4)
        firing = [c for c in changes if (c["type"], c["action"]) in FIRING]  # no patient deletes, no referrals
        assert len(receiver.received) == len(firing)
        numbers: dict[str, list[int]] = {}
        for path, headers, body in receiver.received:
            assert headers["x-webhook-secret"] == "s3cret" and headers["content-type"] == "application/fhir+json"
            bundle = json.loads(body)
            assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
            status = bundle["entry"][0]["resource"]
            params = {p["name"]: p for p in status["parameter"]}
            event = path.rsplit("/", 1)[1]
            assert params["subscription"]["valueReference"]["reference"].endswith(f"/Subscription/sub-{event}")
            parts = {p["name"]: p for p in params["notification-event"]["part"]}
            number = int(parts["event-number"]["valueString"])
            assert int(params["events-since-subscription-start"]["valueString"]) == number
            focus = parts["focus"]["valueReference"]["reference"]
            assert event.split("-")[0] == focus.split("/")[0].lower()
            words = set(json.dumps(bundle).replace("\"", " ").split())
            assert not {"given", "family", "telecom", "birthDate"} & words  # ids only
            numbers.setdefault(event, []).append(number)
        assert all(sorted(n) == list(range(1, len(n) + 1)) for n in numbers.values())  # per subscription
        log = httpx.get(f"http://127.0.0.1:{box.port}/_sandbox/deliveries").json()
        assert {d["status"] for d in log} == {"delivered"} and len(log) == len(firing)
    finally:
        box.stop()


def test_hmac_signed_bodies(receiver: Receiver) -> None:
    box = sandbox_with(WebhookConfig(receiver.url, "hmac-sha256", "hmac-key", backoff=0.01))
    try:
        churn(box, updates=5)
        for _path, headers, body in receiver.received:
            assert headers["x-webhook-signature"] == hmac_sha256_hex("hmac-key", body)
            event = json.loads(body)
            assert event["event"] in {"patient.update", "appointment.update", "invoice.update"}
            assert set(event["data"]) == {"resourceType", "id", "versionId"}
    finally:
        box.stop()


def test_standard_webhooks_signatures_verify_with_the_reference_library(receiver: Receiver) -> None:
    box = sandbox_with(WebhookConfig(receiver.url, "standard-webhooks", WHSEC, backoff=0.01))
    try:
        churn(box, creates=3, updates=3)
        assert receiver.received
        for _path, headers, body in receiver.received:
            assert headers["webhook-signature"].startswith("v1,")
            Webhook(WHSEC).verify(body, headers)  # raises if the signature is wrong
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + base64.b64encode(b"x" * 24).decode()).verify(body, headers)
    finally:
        box.stop()


def test_failed_deliveries_are_retried_until_delivered() -> None:
    flaky = Receiver(fail_first=2)
    box = sandbox_with(WebhookConfig(flaky.url, "halaxy", "s", backoff=0.01))
    try:
        churn(box, updates=1)
        (delivery,) = httpx.get(f"http://127.0.0.1:{box.port}/_sandbox/deliveries").json()
        assert delivery["status"] == "delivered" and delivery["attempts"] == 3
    finally:
        box.stop()
        flaky.stop()


def test_webhooks_go_to_this_machine_only() -> None:
    assert require_loopback("http://127.0.0.1:7071/api/webhooks/x/{event}")
    for url in ("http://10.0.0.5/hook", "https://example.com/hook", "ftp://127.0.0.1/x"):
        with pytest.raises(ValueError, match="only delivers webhooks to this machine"):
            WebhookConfig(url, "halaxy", "s")
