"""verify_request: the three schemes, fixed vectors, an injected clock, and hostile input."""
from __future__ import annotations

import base64
import json
import random
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.webhooks import WebhookRejected, verify_request
from shared.webhooks.signatures import hmac_sha256_hex, standard_webhooks_signature

# The Standard Webhooks specification's published test vector.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID, STAMP, PAYLOAD = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
JSON = {"content-type": "application/json"}


def sw_headers(signature: str = SIGNATURE, stamp: str = str(STAMP), msg_id: str = MSG_ID) -> dict[str, str]:
    return JSON | {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": signature}


def rejected(*args: object, **kwargs: object) -> tuple[int, str]:
    with pytest.raises(WebhookRejected) as info:
        verify_request(*args, **kwargs)  # type: ignore[arg-type]  # the tests pass wrong values on purpose
    return info.value.status, info.value.reason


def test_the_specification_vector_passes_and_its_key_is_the_webhook_id() -> None:
    assert standard_webhooks_signature(SECRET, MSG_ID, STAMP, PAYLOAD) == SIGNATURE
    assert verify_request("standard-webhooks", [SECRET], sw_headers(), PAYLOAD, STAMP) == f"webhook-id:{MSG_ID}"


@pytest.mark.parametrize(("offset", "accepted"), [(0, True), (300, True), (-300, True), (301, False),
                                                  (-301, False), (300.5, False)])
def test_tolerance_is_300_seconds_either_side(offset: float, accepted: bool) -> None:
    now = STAMP + offset
    if accepted:
        assert verify_request("standard-webhooks", [SECRET], sw_headers(), PAYLOAD, now)
    else:
        assert rejected("standard-webhooks", [SECRET], sw_headers(), PAYLOAD, now) == (401, "timestamp-out-of-tolerance")


def test_several_signatures_unknown_versions_skipped_and_rotation() -> None:
    other = "whsec_" + base64.b64encode(b"another secret of enough length!").decode()
    other_sig = standard_webhooks_signature(other, MSG_ID, STAMP, PAYLOAD)
    assert verify_request("standard-webhooks", [SECRET], sw_headers(f"v2,abc {other_sig}  {SIGNATURE}"), PAYLOAD, STAMP)
    assert verify_request("standard-webhooks", [other, SECRET], sw_headers(), PAYLOAD, STAMP)  # old + new secret
    assert rejected("standard-webhooks", [other], sw_headers(), PAYLOAD, STAMP) == (401, "bad-signature")
    assert rejected("standard-webhooks", [SECRET], sw_headers("v2," + SIGNATURE[3:]), PAYLOAD, STAMP) == (
        401, "bad-signature")


@pytest.mark.parametrize(("headers", "expected"), [
    (sw_headers(SIGNATURE[:-4]), (401, "bad-signature")),  # truncated base64
    (sw_headers(SIGNATURE + "=="), (401, "bad-signature")),  # over-padded base64
    (sw_headers("v1," + SIGNATURE[3:].rstrip("=")), (401, "bad-signature")),  # padding stripped
    (sw_headers("v1,!!!not base64!!!"), (401, "bad-signature")),
    (sw_headers("   "), (401, "bad-signature")),
    (sw_headers(","), (401, "bad-signature")),
    (sw_headers(stamp=f"{STAMP}.0"), (400, "bad-timestamp")),  # float
    (sw_headers(stamp=f"-{STAMP}"), (400, "bad-timestamp")),  # negative
    (sw_headers(stamp="1e9"), (400, "bad-timestamp")),
    (sw_headers(stamp="9" * 400), (400, "bad-timestamp")),
    (sw_headers(stamp=f" {STAMP} "), None),  # surrounding spaces are tolerated
    (sw_headers(msg_id="has space"), (400, "bad-webhook-id")),
    (sw_headers(msg_id=""), (400, "bad-webhook-id")),
    ({k: v for k, v in sw_headers().items() if k != "webhook-signature"}, (401, "missing-signature")),
    ({"Content-Type": "application/json", "Webhook-Id": MSG_ID, "WEBHOOK-TIMESTAMP": str(STAMP),
      "webhook-Signature": SIGNATURE}, None),  # header names are case-insensitive
])
def test_malformed_standard_webhooks_headers(headers: dict[str, str], expected: tuple[int, str] | None) -> None:
    if expected is None:
        assert verify_request("standard-webhooks", [SECRET], headers, PAYLOAD, STAMP)
    else:
        assert rejected("standard-webhooks", [SECRET], headers, PAYLOAD, STAMP) == expected


def test_limits_come_before_authentication() -> None:
    big = b"x" * (256 * 1024 + 1)
    assert rejected("standard-webhooks", [SECRET], sw_headers(), big, STAMP) == (413, "body-too-large")
    assert rejected("halaxy", ["s"], {"content-type": "text/plain", "x-webhook-secret": "s"}, b"{}", 0) == (
        415, "unsupported-content-type")
    assert rejected("halaxy", ["s"], {"x-webhook-secret": "s"}, b"{}", 0) == (415, "unsupported-content-type")
    assert verify_request("halaxy", ["s"], {"content-type": "application/fhir+json; charset=utf-8",
                                            "x-webhook-secret": "s"}, b"{}", 0).startswith("sha256:")


def test_empty_or_missing_secrets_never_authenticate() -> None:
    assert rejected("halaxy", [], JSON | {"x-webhook-secret": ""}, b"{}", 0) == (401, "no-secret-configured")
    assert rejected("halaxy", ["", "  "], JSON | {"x-webhook-secret": ""}, b"{}", 0) == (401, "no-secret-configured")
    assert rejected("hmac-sha256", [""], JSON | {"x-webhook-signature": hmac_sha256_hex("", b"{}")}, b"{}", 0) == (
        401, "no-secret-configured")
    assert rejected("standard-webhooks", ["whsec_"], sw_headers(), PAYLOAD, STAMP) == (401, "bad-signature")
    assert rejected("nonsense", ["s"], JSON, b"{}", 0) == (401, "unknown-scheme")


def test_halaxy_static_secret_in_a_configurable_header_with_a_backport_key() -> None:
    body = json.dumps({"resourceType": "Bundle", "type": "history", "entry": [{"resource": {
        "resourceType": "SubscriptionStatus", "subscription": {"reference": "Subscription/s1"},
        "eventsSinceSubscriptionStart": "7", "notificationEvent": [{"eventNumber": "7"}]}}]}).encode()
    assert verify_request("halaxy", ["old", "new"], JSON | {"X-Webhook-Secret": "new"}, body, 0) == (
        "sub:Subscription/s1#7")
    assert verify_request("halaxy", ["k"], JSON | {"X-Halaxy-Key": "k"}, body, 0, header="X-Halaxy-Key")
    assert rejected("halaxy", ["k"], JSON | {"X-Webhook-Secret": "k"}, body, 0, header="X-Halaxy-Key") == (
        401, "missing-signature")
    assert rejected("halaxy", ["k"], JSON | {"x-webhook-secret": "K"}, body, 0) == (401, "bad-secret")
    assert rejected("halaxy", ["k"], JSON | {"x-webhook-secret": "k "}, body, 0) == (401, "bad-secret")


def test_hmac_sha256_hex_of_the_raw_body() -> None:
    body = b'{"event":"appointment.update","data":{"id":"A-1"}}'
    good = hmac_sha256_hex("tenant-a", body)
    assert verify_request("hmac-sha256", ["tenant-a"], JSON | {"x-webhook-signature": good.upper()}, body, 0) == (
        "sha256:" + __import__("hashlib").sha256(body).hexdigest())
    assert rejected("hmac-sha256", ["tenant-a"], JSON | {"x-webhook-signature": good[:-1]}, body, 0)[0] == 401
    assert rejected("hmac-sha256", ["tenant-a"], JSON | {"x-webhook-signature": good}, body + b" ", 0)[0] == 401
    assert rejected("hmac-sha256", ["tenant-a"], JSON | {"x-webhook-signature": "sha256=" + good}, body, 0)[0] == 401


def test_a_body_signed_by_another_tenant_never_authenticates() -> None:
    body = PAYLOAD
    b_secret = "whsec_" + base64.b64encode(b"tenant b's own signing secret!!").decode()
    forged = sw_headers(standard_webhooks_signature(b_secret, MSG_ID, STAMP, body))
    assert verify_request("standard-webhooks", [b_secret], forged, body, STAMP)
    assert rejected("standard-webhooks", [SECRET], forged, body, STAMP) == (401, "bad-signature")
    assert rejected("hmac-sha256", ["a"], JSON | {"x-webhook-signature": hmac_sha256_hex("b", body)}, body, 0)[0] == 401
    assert rejected("halaxy", ["a"], JSON | {"x-webhook-secret": "b"}, body, 0)[0] == 401


def test_non_utf8_bodies_and_odd_header_values() -> None:
    body = b"\xff\xfe{\x80}"
    signature = standard_webhooks_signature(SECRET, MSG_ID, STAMP, body)
    assert verify_request("standard-webhooks", [SECRET], sw_headers(signature), body, STAMP)  # bytes are signed
    assert verify_request("halaxy", ["s"], JSON | {"x-webhook-secret": "s"}, body, 0).startswith("sha256:")
    assert rejected("halaxy", ["s"], JSON | {"x-webhook-secret": b"s"}, b"{}", 0) == (400, "malformed-header")
    assert rejected("halaxy", ["s"], JSON | {"x-webhook-secret": "\udcff"}, b"{}", 0) == (401, "bad-secret")
    assert rejected("halaxy", ["s"], JSON, "text", 0) == (400, "malformed-body")


def test_random_input_only_ever_raises_webhook_rejected_and_agrees_with_the_reference_library() -> None:
    # The reference library reads the wall clock; ours is given the same moment, taken now. Stamps
    # within 2 s of the 5-minute tolerance are left out: the clock moves while the loop runs.
    now = int(time.time())
    rng = random.Random(20261123)
    alphabet = "v1,2 =+/abcXYZ.-_\t\x00é"
    compared = accepted = 0
    for _ in range(3000):
        body = rng.choice([rng.randbytes(rng.randint(0, 40)), "".join(rng.choices(alphabet, k=20)).encode()])
        offset = rng.choice([d for d in (rng.randint(-400, 400),) if not 298 <= abs(d) <= 302] or [0])
        stamp = rng.choice([str(now + offset), str(rng.random()), "".join(rng.choices(alphabet, k=rng.randint(0, 12)))])
        msg_id = rng.choice([MSG_ID, "".join(rng.choices(alphabet, k=rng.randint(0, 20)))])
        if rng.random() < 0.6 and stamp.isdigit():
            signature = standard_webhooks_signature(SECRET, msg_id, int(stamp), body)
            signature = rng.choice([signature, signature[:-2], "v2," + signature[3:], f"v9,x {signature}"])
        else:
            signature = "".join(rng.choices(alphabet, k=rng.randint(0, 60)))
        headers = sw_headers(signature, stamp, msg_id)
        try:
            ours = bool(verify_request("standard-webhooks", [SECRET], headers, body, now))
        except WebhookRejected:
            ours = False
        # Compare where the reference library's input rules are ours: UTF-8 text, integer
        # timestamps, printable ids, every signature "version,value" (it crashes on others).
        comparable = (stamp.isascii() and stamp.isdigit() and msg_id.isascii() and msg_id.isprintable()
                      and msg_id and " " not in msg_id and all("," in c for c in signature.split(" ")))
        try:
            body.decode()
        except UnicodeDecodeError:
            comparable = False
        if comparable:
            try:
                Webhook(SECRET).verify(body, headers, json_parse=False)
                theirs = True
            except (WebhookVerificationError, ValueError):
                theirs = False
            assert ours == theirs, (headers, body)
            compared += 1
            accepted += ours
    assert compared > 150 and 50 < accepted < compared  # both verdicts were exercised
