"""Blueprints that adapt Azure Functions triggers to the engine (webhooks, queues, timers, reads).

The only package allowed to import azure.functions. Registered: the webhook HTTP function, the
two queue functions (apply a change, run a reconcile step), the timer fan-out, and the read
endpoints (dashboard, health) and sync management (trigger, runs, cancel, cleanup, poison
re-drive).
"""
from __future__ import annotations

from typing import Any

from shared.blueprints.manage import bp as manage
from shared.blueprints.queues import bp as queues
from shared.blueprints.reads import bp as reads
from shared.blueprints.timers import bp as timers
from shared.blueprints.webhooks import bp as webhooks

BLUEPRINTS: list[Any] = [webhooks, queues, timers, reads, manage]
