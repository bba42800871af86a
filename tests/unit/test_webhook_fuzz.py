"""Property-based fuzzing of the webhook door (hypothesis): for any headers, body, secrets and
clock, verify_request returns a key or raises WebhookRejected with a 4xx and a short reason, and
parse_notification returns events or raises WebhookRejected(400). Generated inputs mix pure noise
with correctly signed deliveries that are then damaged, so both verdicts are exercised."""
from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.sandbox.data import Change
from devtools.sandbox.notify import halaxy_bundle, json_event
from shared.webhooks import WebhookRejected, verify_request
from shared.webhooks.notifications import parse_notification
from shared.webhooks.signatures import hmac_sha256_hex, standard_webhooks_signature

pytestmark = pytest.mark.slow  # hypothesis: most of the unit tier's time

NOW = 1_767_225_600
AT = datetime.fromtimestamp(NOW, UTC)
SCHEMES = ("halaxy", "hmac-sha256", "standard-webhooks")
SECRETS = {"halaxy": "halaxy-secret", "hmac-sha256": "hmac-secret", "standard-webhooks": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
REASON = re.compile(r"^[a-z][a-z-]{2,40}$")
FUZZ = settings(max_examples=10_000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
outcomes: Counter[str] = Counter()

noise_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    ["", " ", "v1,", "v1,====", "v1,abc= v2,xyz", "whsec_", "1767225600", "1767225600.5", "-1", "1e308",
     "application/json", "application/fhir+json; charset=utf-8", "\x00", "é"])
header_names = st.sampled_from(["content-type", "Content-Type", "x-webhook-secret", "X-Webhook-Signature",
                                "webhook-id", "webhook-timestamp", "webhook-signature", "x-other"]) | noise_text
bodies = st.binary(max_size=300) | st.sampled_from([
    b"", b"{}", b"[]", b"null", b"{\"resourceType\": \"Bundle\"}", b"\xff\xfe", b"[" * 40 + b"]" * 40,
    json.dumps(halaxy_bundle(Change("Appointment", "AP-1", "update", 2, AT), "http://x/main", 3)).encode(),
    json.dumps(json_event(Change("Invoice", "IN-5", "create", 1, AT))).encode()])


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[str, list[str], dict[str, str], bytes, float]:
    scheme = draw(st.sampled_from(SCHEMES))
    secrets = draw(st.lists(st.sampled_from([SECRETS[scheme], "", "whsec_", "whsec_!!", "other"]) | noise_text,
                            max_size=3))
    body = draw(bodies)
    headers = draw(st.dictionaries(header_names, noise_text, max_size=6))
    now = draw(st.sampled_from([NOW, NOW + 300, NOW - 301, 0.0, -1.0, 1e18, float(NOW) + 0.5]))
    if draw(st.booleans()):  # a correctly signed delivery, then maybe damaged
        secrets = [SECRETS[scheme], *secrets]
        headers["content-type"] = draw(st.sampled_from(["application/json", "application/fhir+json"]))
        if scheme == "halaxy":
            headers["x-webhook-secret"] = SECRETS[scheme]
        elif scheme == "hmac-sha256":
            headers["x-webhook-signature"] = hmac_sha256_hex(SECRETS[scheme], body)
        else:
            stamp = draw(st.sampled_from([NOW, NOW - 299, NOW + 400]))
            headers |= {"webhook-id": draw(st.sampled_from(["msg_1", "msg 2", ""])), "webhook-timestamp": str(stamp)}
            headers["webhook-signature"] = standard_webhooks_signature(SECRETS[scheme], headers["webhook-id"], stamp,
                                                                       body)
        damage = draw(st.sampled_from(["none", "truncate", "pad", "space", "flip"]))
        for name in ("x-webhook-secret", "x-webhook-signature", "webhook-signature"):
            if name in headers and damage != "none":
                value = headers[name]
                headers[name] = {"truncate": value[:-3], "pad": value + "==", "space": f" {value} ",
                                 "flip": value[:-1] + ("A" if value[-1:] != "A" else "B")}[damage]
    return scheme, secrets, headers, body, now


@FUZZ
@given(deliveries())
def test_verify_request_only_ever_answers_a_key_or_webhook_rejected(
        delivery: tuple[str, list[str], dict[str, str], bytes, float]) -> None:
    scheme, secrets, headers, body, now = delivery
    try:
        key = verify_request(scheme, secrets, headers, body, now)
    except WebhookRejected as exc:
        assert exc.status in (400, 401, 413, 415) and REASON.match(exc.reason), (exc.status, exc.reason)
        outcomes["rejected"] += 1
    else:
        assert isinstance(key, str) and 0 < len(key) <= 300
        outcomes["accepted"] += 1


def test_the_fuzz_exercised_both_verdicts() -> None:
    # Runs after the fuzz in file order; on its own (-k) it runs the fuzz's strategy once more.
    if sum(outcomes.values()) < 10_000:
        test_verify_request_only_ever_answers_a_key_or_webhook_rejected()
    assert sum(outcomes.values()) >= 10_000
    assert outcomes["accepted"] > 500 and outcomes["rejected"] > 5_000, outcomes


events = st.sampled_from(["appointment-update", "patient-create", "invoice-delete", "weather", "", "a.b"]) | noise_text
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | noise_text,
                           lambda inner: st.lists(inner, max_size=5) | st.dictionaries(noise_text, inner, max_size=5),
                           max_leaves=30)


@settings(FUZZ, max_examples=3_000)
@given(st.one_of(bodies, json_values.map(lambda v: json.dumps(v).encode())), events)
def test_parse_notification_only_ever_answers_events_or_a_400(body: bytes, event: str) -> None:
    try:
        found, _status = parse_notification(body, event)
    except WebhookRejected as exc:
        assert exc.status == 400 and REASON.match(exc.reason), exc.reason
    else:
        assert isinstance(found, list)
