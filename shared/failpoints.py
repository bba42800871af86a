"""Failpoints: named places where the fault harness (bench/faults/) makes the app crash.

Off unless the ``FAILPOINTS`` environment variable names some, e.g.
``FAILPOINTS="apply.after_commit=crash:0.02,webhook.after_enqueue=crash:0.01"`` (place=action:
probability; ``FAILPOINTS_SEED`` makes the draws repeatable). ``crash`` ends the process at once
(``os._exit``: no cleanup, no queue settling, no HTTP answer), which is what a killed worker does.
Read once at import; ``hit`` is a dictionary lookup when nothing is armed. Never set in production.

Places: ``apply.after_commit`` (a change is committed, its queue message not yet deleted) and
``webhook.after_enqueue`` (a delivery is enqueued and recorded, its HTTP answer not yet sent).
"""
from __future__ import annotations

import logging
import os
import random

log = logging.getLogger("shared.failpoints")
PLACES = ("apply.after_commit", "webhook.after_enqueue")
ACTIONS = ("crash",)
CRASH_EXIT_CODE = 86


def parse(spec: str) -> dict[str, tuple[str, float]]:
    """``place=action:probability,…`` → {place: (action, probability)}; raises ValueError."""
    armed: dict[str, tuple[str, float]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        place, _, rest = item.partition("=")
        action, _, chance = rest.partition(":")
        if place not in PLACES or action not in ACTIONS:
            raise ValueError(f"FAILPOINTS: {item!r} is not place=action[:probability] "
                             f"(places: {', '.join(PLACES)}; actions: {', '.join(ACTIONS)})")
        probability = float(chance or 1)
        if not 0 <= probability <= 1:
            raise ValueError(f"FAILPOINTS: {item!r}: the probability must be from 0 to 1")
        armed[place] = (action, probability)
    return armed


_ARMED = parse(os.environ.get("FAILPOINTS", ""))
_RNG = random.Random(os.environ.get("FAILPOINTS_SEED"))


def hit(place: str) -> None:
    if not _ARMED or place not in _ARMED:
        return
    action, probability = _ARMED[place]
    if _RNG.random() < probability:
        log.error("failpoint %s: %s", place, action)
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)
