"""Signing primitives of the three webhook schemes; the sandbox signs with them, the receiver
verifies with the same functions (so both sides agree by construction, and the Standard
Webhooks test vectors pin them to the specification).
"""
from __future__ import annotations

import base64
import hashlib
import hmac

WHSEC_PREFIX = "whsec_"


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    """The in-house designs' scheme: hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_webhooks_key(secret: str) -> bytes:
    """A ``whsec_``-prefixed base64 secret, decoded (raises ValueError when it is not one)."""
    if not secret.startswith(WHSEC_PREFIX):
        raise ValueError("a Standard Webhooks secret starts with 'whsec_'")
    return base64.b64decode(secret[len(WHSEC_PREFIX):], validate=True)


def standard_webhooks_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, per the Standard Webhooks spec."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_webhooks_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()
