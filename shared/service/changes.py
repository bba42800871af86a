"""Apply one change message: re-read the record from the source and write it version-guarded.

When the source holds us back (429 with a long Retry-After, an open circuit, the tenant's
credentials refused) the change is sent again with a visibility delay until then and this
delivery is acknowledged: waiting is not failing, so it must not spend one of the message's
delivery attempts. A change deferred MAX_DEFERRALS times is retried as a failure (and can reach
the poison queue). Log lines carry tenant, resource type, opaque id and outcome, never content.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime

from shared import failpoints
from shared.bootstrap import Runtime
from shared.metrics import Metrics
from shared.queues.messages import CHANGES_QUEUE, ChangeMessage, InvalidMessage, decode, encode
from shared.source.errors import CredentialsRefused, SourceError, SourceUnavailable
from shared.store.guard import UpsertCounts
from shared.sync.apply import ApplyResult, apply_change
from shared.telemetry import telemetry

event_log = logging.getLogger("shared.events.apply")  # one line per change: quiet in `serve`
MAX_DEFERRALS = 50
MIN_DEFER_SECONDS, MAX_DEFER_SECONDS = 1.0, 3600.0


async def apply_change_message(rt: Runtime, text: str) -> ApplyResult:
    """Raises on bad messages and source trouble: the queue retries, then poisons."""
    message = decode(text, ChangeMessage)
    client = rt.sources().source(rt.tenant(message.tenant))
    if message.type not in client.entities("full"):
        raise InvalidMessage(f"not a ChangeMessage for tenant {message.tenant}: its source has no {message.type}")
    try:
        result = await apply_change(rt.engine, client, message)
    except (SourceUnavailable, CredentialsRefused) as exc:
        deferrals = message.deferrals or 0
        if not exc.held or deferrals >= MAX_DEFERRALS:
            rt.metrics.add(message.tenant, "apply.failed")
            raise
        delay = min(max((exc.retry_at or 0) - time.time(), MIN_DEFER_SECONDS), MAX_DEFER_SECONDS)
        rt.queues.send(CHANGES_QUEUE, encode(message.model_copy(update={"deferrals": deferrals + 1})), delay=delay)
        event_log.info("apply tenant=%s type=%s id=%s outcome=deferred delay=%.0fs deferrals=%d", message.tenant,
                       message.type, message.id, delay, deferrals + 1)
        result = ApplyResult("deferred", UpsertCounts(), str(exc))
    except SourceError:
        rt.metrics.add(message.tenant, "apply.failed")
        raise
    else:
        failpoints.hit("apply.after_commit")
        event_log.info("apply tenant=%s type=%s id=%s outcome=%s", message.tenant, message.type, message.id,
                       result.outcome)
    record_apply(rt.metrics, message, result, rt.clock())
    rt.metrics.maybe_flush(rt.engine)
    return result


def record_apply(metrics: Metrics, message: ChangeMessage, result: ApplyResult, now: datetime) -> None:
    """Outcome counts, and the lag from the event (or its receipt) to the committed row."""
    metrics.add(message.tenant, f"apply.{result.outcome}")
    counts = result.counts
    metrics.add(message.tenant, "apply.stale", counts.stale)
    metrics.add(message.tenant, "apply.unchanged", counts.unchanged)
    written = counts.written
    metrics.add(message.tenant, "apply.written", written)
    telemetry().records_synced(message.tenant, message.type, "webhook", written)
    since = message.event_at or message.received_at
    if written and since is not None:
        metrics.observe_lag(message.tenant, (now - since).total_seconds())
