"""Delete detection after a full reconcile: only after the whole listing succeeded.

Candidates are live mirror rows the listing did not see and that did not change since the run
started (a webhook may have brought a newer row in meanwhile). Each is confirmed by reading it
from the source where it has a single-record read: 404/410 makes a tombstone, an answer means the
listing missed it and the row is refreshed. For an entity without one, the full run listed it a
second time when the first listing missed rows (shared.sync.reconcile), so the candidates are
what both listings missed. Above a cap (a share of the table) nothing is deleted: a source
listing too little looks exactly like mass deletion, so the run records an alert instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from shared.records import MirrorRow
from shared.source.budget import BULK
from shared.source.protocol import Source, Unmappable
from shared.store.engine import write_transaction
from shared.store.mirror import write_rows
from shared.store.seen import unseen_live_ids

CAP_SHARE = 0.05
CAP_MINIMUM = 10  # small tables: a handful of deletions is never "mass deletion"


@dataclass
class DeleteReport:
    candidates: int = 0
    deleted: int = 0
    restored: int = 0
    refused: str | None = None


async def detect_deletes(engine: Engine, client: Source, tenant_id: str, run_id: str, resource_type: str,
                         started_at: datetime) -> DeleteReport:
    table = client.table(resource_type)
    with engine.connect() as conn:
        ids, live = unseen_live_ids(conn, tenant_id, run_id, table, resource_type, started_at)
    report = DeleteReport(candidates=len(ids))
    cap = max(CAP_MINIMUM, int(live * CAP_SHARE))
    if len(ids) > cap:
        report.refused = (f"{resource_type}: {len(ids):,} of {live:,} rows missing from the listing, over the "
                          f"cap of {cap:,}; nothing deleted. Check the source, then run a full reconcile again")
        return report
    readable = client.readable(resource_type)
    for source_id in ids:
        try:
            found = await client.fetch(resource_type, source_id, priority=BULK) if readable else None
        except Unmappable:
            continue  # it exists; leave the stored row alone
        if found is None:
            row = MirrorRow.tombstone(table, source_id, datetime.now(UTC))
            report.deleted += 1
        else:
            row = found
            report.restored += 1
        with write_transaction(engine) as conn:
            write_rows(conn, tenant_id, [row])
    return report
