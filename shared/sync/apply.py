"""Apply one change message: the webhook is a hint, the source is the truth — except where a
REST source has no single-record read: then the record its event carried is applied, dated by
the event (the version guard orders it against listings).

The resource is re-read from the source (through the tenant's client: same token cache, gate,
breaker and budget as reconciles, at real-time priority) and upserted with the version guard,
so duplicates, replays and out-of-order deliveries all converge on the source's current state.
404/410 on re-read becomes a tombstone dated now. Outcomes:
- ``applied`` (with the upsert's counts) or ``deleted``: acknowledge the message;
- ``unmappable``: the resource exists but cannot be mapped; retrying will not help, so it is
  acknowledged and counted (a reconcile will report it too);
- source trouble (SourceUnavailable, TokenError…) is raised: the queue redelivers later, and
  after maxDequeueCount attempts the message lands in the poison queue.
"""
from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from shared.queues.messages import ChangeMessage
from shared.records import MirrorRow
from shared.source.budget import REALTIME
from shared.source.errors import DuplicateKeys
from shared.source.protocol import Source, Unmappable
from shared.store.declared import refuse_repeats, unique_columns
from shared.store.engine import write_transaction
from shared.store.guard import UpsertCounts
from shared.store.inbox import claim_delivery
from shared.store.mirror import write_rows


@dataclass(frozen=True)
class ApplyResult:
    outcome: str  # applied | deleted | unmappable | deferred (put back: shared.service.changes)
    counts: UpsertCounts
    reason: str | None = None


async def apply_change(engine: Engine, client: Source, message: ChangeMessage, *,
                       now: datetime | None = None) -> ApplyResult:
    if message.tenant != client.tenant.id:
        raise ValueError(f"message for tenant {message.tenant} given to the client of {client.tenant.id}")
    now = wall = now or datetime.now(UTC)
    try:
        if message.data is not None:  # the event carried the record: the source has no read
            # Its version is the event's time where the source states none (docs/sources.md).
            seen = message.event_at or message.received_at or now
            found = None if message.action == "delete" else client.payload_row(message.type, message.data, seen)
            now = seen
        else:
            found = await client.fetch(message.type, message.id, priority=REALTIME)
    except Unmappable as exc:
        return ApplyResult("unmappable", UpsertCounts(), str(exc))
    if found is None:
        row = MirrorRow.tombstone(client.table(message.type), message.id, now)
        outcome = "deleted"
    else:
        row, outcome = found, "applied"
    # On a worker thread: the event loop keeps serving other changes while this one waits for
    # its commit (a synchronous commit here made every apply in the process wait in line).
    unique = unique_columns(client.tenant, message.type)
    # A carried record is applied once per event: a message delivered again after its commit (the
    # worker died before deleting it) must not put back an older record over a newer one of the
    # same second (HIE's lastUpdated has no finer grain). Re-reads need no such care: they read
    # the source's latest.
    once = (f"applied:{hashlib.sha1(message.event_key.encode()).hexdigest()}"
            if message.data is not None and message.event_key else None)
    try:
        counts = await asyncio.to_thread(_write, engine, message.tenant, row, message.type, unique, once, wall)
    except DuplicateKeys as exc:
        return ApplyResult("duplicate-key", UpsertCounts(), str(exc))
    if counts is None:
        return ApplyResult("already-applied", UpsertCounts())
    return ApplyResult(outcome, counts)


def _write(engine: Engine, tenant_id: str, row: MirrorRow, entity: str, unique: tuple[str, ...],
           once: str | None, now: datetime) -> UpsertCounts | None:
    with write_transaction(engine) as conn:
        if once is not None and not claim_delivery(conn, tenant_id, once, "apply", now):
            return None
        if unique:
            refuse_repeats(conn, tenant_id, entity, [row], unique, "the event was not applied")
        return write_rows(conn, tenant_id, [row])
