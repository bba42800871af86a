"""Authenticate one webhook delivery (Contract): ``verify_request`` and ``WebhookRejected``.

Pure: no I/O, the clock is passed in. Every failure is a WebhookRejected with an HTTP status and
a short machine-readable reason; nothing else escapes, whatever the headers or body hold.
Limits come before any parsing (413 size, 415 content type), authentication before the body is
read as JSON. Secrets are compared in constant time; several may be valid at once (rotation).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping

from shared.webhooks.notifications import backport_status
from shared.webhooks.rejected import WebhookRejected
from shared.webhooks.signatures import WHSEC_PREFIX, hmac_sha256_hex

MAX_BODY_BYTES = 256 * 1024
TOLERANCE_SECONDS = 300
DEFAULT_HEADERS = {"halaxy": "x-webhook-secret", "hmac-sha256": "x-webhook-signature"}
SCHEMES = ("halaxy", "hmac-sha256", "standard-webhooks")
_JSON_TYPE = re.compile(r"^application/([a-z0-9.+-]*\+)?json$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_MSG_ID = re.compile(r"^[\x21-\x7e]{1,200}$")
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def verify_request(scheme: str, secrets: list[str], headers: Mapping[str, str], body: bytes, now: float,
                   *, header: str | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> str:
    """Authenticate a delivery and return its idempotency key.

    ``header`` names the static-secret (halaxy) or signature (hmac-sha256) header when the
    tenant configures one; standard-webhooks always uses its own three headers.
    """
    try:
        return _verify(scheme, secrets, headers, body, now, header, max_body_bytes)
    except WebhookRejected:
        raise
    except Exception:
        raise WebhookRejected(400, "malformed-request") from None


def _verify(scheme: str, secrets: list[str], headers: Mapping[str, str], body: bytes, now: float,
            header: str | None, max_body_bytes: int) -> str:
    if not isinstance(body, (bytes, bytearray)):
        raise WebhookRejected(400, "malformed-body")
    if len(body) > max_body_bytes:
        raise WebhookRejected(413, "body-too-large")
    lowered = _lower_headers(headers)
    content_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    if not _JSON_TYPE.match(content_type):
        raise WebhookRejected(415, "unsupported-content-type")
    if scheme not in SCHEMES:
        raise WebhookRejected(401, "unknown-scheme")
    usable = [s for s in secrets if isinstance(s, str) and s.strip()]
    if not usable:
        raise WebhookRejected(401, "no-secret-configured")
    body = bytes(body)
    if scheme == "standard-webhooks":
        return _standard_webhooks(usable, lowered, body, now)
    name = (header or DEFAULT_HEADERS[scheme]).lower()
    presented = lowered.get(name)
    if presented is None:
        raise WebhookRejected(401, "missing-signature")
    if scheme == "halaxy":
        if not any(_same(presented, secret) for secret in usable):
            raise WebhookRejected(401, "bad-secret")
        return _backport_key(body) or _body_key(body)
    presented = presented.strip().lower()
    if not _HEX.match(presented) or not any(_same(presented, hmac_sha256_hex(s, body)) for s in usable):
        raise WebhookRejected(401, "bad-signature")
    return _body_key(body)


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise WebhookRejected(400, "malformed-header")
        out[key.lower()] = value
    return out


def _same(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _standard_webhooks(secrets: list[str], headers: dict[str, str], body: bytes, now: float) -> str:
    msg_id, stamp, signatures = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if msg_id is None or stamp is None or signatures is None:
        raise WebhookRejected(401, "missing-signature")
    if not _MSG_ID.match(msg_id):
        raise WebhookRejected(400, "bad-webhook-id")
    stamp = stamp.strip()
    if not _TIMESTAMP.match(stamp):
        raise WebhookRejected(400, "bad-timestamp")
    if abs(float(now) - int(stamp)) > TOLERANCE_SECONDS:
        raise WebhookRejected(401, "timestamp-out-of-tolerance")
    signed = f"{msg_id}.{stamp}.".encode() + body
    expected = [hmac.new(key, signed, hashlib.sha256).digest() for key in map(_whsec_key, secrets) if key]
    for candidate in signatures.split():
        version, _, encoded = candidate.partition(",")
        if version != "v1":
            continue  # unknown versions are skipped, as the specification says
        try:
            presented = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(presented, digest) for digest in expected):
            return f"webhook-id:{msg_id}"
    raise WebhookRejected(401, "bad-signature")


def _whsec_key(secret: str) -> bytes | None:
    try:
        return base64.b64decode(secret.removeprefix(WHSEC_PREFIX), validate=True) or None
    except (binascii.Error, ValueError):
        return None


def _body_key(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _backport_key(body: bytes) -> str | None:
    """subscription + event numbers of a Backport notification, when they can be read."""
    try:
        bundle = json.loads(body)
    except (ValueError, RecursionError):
        return None
    status = backport_status(bundle)
    if status is None or not status.subscription or not status.event_numbers:
        return None
    numbers = ",".join(str(n) for n in status.event_numbers)
    key = f"sub:{status.subscription}#{numbers}"
    return key if len(key) <= 200 else f"sub:{hashlib.sha256(key.encode()).hexdigest()}"

