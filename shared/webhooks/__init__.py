"""Webhooks: authentication schemes (halaxy, hmac-sha256, standard-webhooks) and notifications.

``verify_request`` and ``WebhookRejected`` are the public contract (see verify.py).
"""
from shared.webhooks.rejected import WebhookRejected
from shared.webhooks.verify import verify_request

__all__ = ["WebhookRejected", "verify_request"]
