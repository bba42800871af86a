"""Blueprints that adapt Azure Functions triggers to the engine (webhooks, queues, timers, reads).

The only package allowed to import azure.functions. Registered: the webhook HTTP function, the
two queue functions (apply a change, run a reconcile step), the timer fan-out, and the read
endpoints (dashboard, health) and sync management (trigger, runs, cancel, cleanup, poison
re-drive).
"""
from __future__ import annotations

from typing import Any

from shared.blueprints.http import MAX_BODY
from shared.blueprints.manage import bp as manage
from shared.blueprints.queues import bp as queues
from shared.blueprints.reads import bp as reads
from shared.blueprints.timers import bp as timers
from shared.blueprints.webhooks import bp as webhooks
from shared.webhooks.verify import MAX_BODY_BYTES

BLUEPRINTS: list[Any] = [webhooks, queues, timers, reads, manage]

# The largest body each HTTP function reads (a JSON body of 4 KiB, a webhook of 256 KiB): a host
# that can (the local host) refuses a larger one with 413 before reading it.
BODY_LIMITS: dict[str, int] = {"receive_webhook": MAX_BODY_BYTES}


def body_limit(function_name: str) -> int:
    return BODY_LIMITS.get(function_name, MAX_BODY)
