"""Blueprints that adapt Azure Functions triggers to the engine (webhooks, queues, timers, reads).

The only package allowed to import azure.functions. Registered so far: the two queue functions
(apply a change, run a reconcile step); the webhook HTTP function, the timer fan-out and the read
endpoints come next.
"""
from __future__ import annotations

from typing import Any

from shared.blueprints.queues import bp as queues

BLUEPRINTS: list[Any] = [queues]
