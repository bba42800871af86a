"""The one refusal of the webhook door, raised by verification and by notification parsing alike."""
from __future__ import annotations


class WebhookRejected(Exception):
    """A delivery refused: ``status`` is the HTTP answer, ``reason`` a short code for metrics."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
