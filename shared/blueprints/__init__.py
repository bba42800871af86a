"""Blueprints that adapt Azure Functions triggers to the engine (webhooks, queues, timers, reads).

The only package allowed to import azure.functions. Empty until the sync engine lands: the app
registers no function yet.
"""
from __future__ import annotations

from typing import Any

BLUEPRINTS: list[Any] = []
