"""Blueprints that adapt Azure Functions triggers to the engine (webhooks, queues, timers, reads).

The only package allowed to import azure.functions. Registered so far: the webhook HTTP function,
the two queue functions (apply a change, run a reconcile step) and the timer fan-out; the read
endpoints come next.
"""
from __future__ import annotations

from typing import Any

from shared.blueprints.queues import bp as queues
from shared.blueprints.timers import bp as timers
from shared.blueprints.webhooks import bp as webhooks

BLUEPRINTS: list[Any] = [webhooks, queues, timers]
