"""Move a tenant's change messages from the poison queue back to ``changes``.

Other tenants' messages and unreadable ones stay where they are, visible again as soon as the
pass ends. One re-drive at a time (a lease in the database): a second is told it runs already.
"""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from shared.bootstrap import Runtime
from shared.queues.messages import CHANGES_QUEUE, ChangeMessage, decode
from shared.queues.port import QueuePort, ReceivedMessage, poison_name
from shared.store.engine import write_transaction
from shared.store.leases import drop_lease, take_lease

log = logging.getLogger("shared.functions")
REDRIVE_BATCH = 32
REDRIVE_LEASE = "redrive:changes-poison"
REDRIVE_LEASE_TTL = timedelta(minutes=5)  # a re-drive that dies frees it then


class RedriveRunning(Exception):
    """Another re-drive holds the lease."""


def redrive_changes(rt: Runtime, tenant_id: str) -> tuple[int, int]:
    """Returns (moved, left for other tenants); raises RedriveRunning."""
    holder = f"{tenant_id}:{uuid.uuid4()}"
    with write_transaction(rt.engine) as conn:
        if not take_lease(conn, REDRIVE_LEASE, holder, rt.clock(), REDRIVE_LEASE_TTL):
            raise RedriveRunning(tenant_id)
    try:
        moved, kept = redrive_pass(rt.queues, tenant_id)
    finally:
        with write_transaction(rt.engine) as conn:
            drop_lease(conn, REDRIVE_LEASE, holder)
    log.info("poison redrive tenant=%s moved=%d kept=%d", tenant_id, moved, kept)
    return moved, kept


def redrive_pass(queues: QueuePort, tenant_id: str) -> tuple[int, int]:
    """One pass over the poison queue: moves ``tenant_id``'s messages, and makes every other one
    visible again at the end (hidden while the pass runs, so that it sees each message once)."""
    poison = poison_name(CHANGES_QUEUE)
    moved, others, seen = 0, list[ReceivedMessage](), set[str]()
    try:
        while True:
            batch = [m for m in queues.receive(poison, max_messages=REDRIVE_BATCH, visibility_timeout=60)
                     if m.id not in seen]
            if not batch:
                break
            for message in batch:
                seen.add(message.id)
                try:
                    mine = decode(message.text, ChangeMessage).tenant == tenant_id
                except ValueError:
                    mine = False
                if not mine:
                    others.append(message)
                    continue
                queues.send(CHANGES_QUEUE, message.text)
                queues.delete(poison, message)
                moved += 1
    finally:
        for message in others:  # another tenant's re-drive, right after this one, must see them
            queues.release(poison, message, delay=0)
    return moved, len(others)
