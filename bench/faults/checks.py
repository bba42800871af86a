"""What a run checks after the drain: acknowledged changes missing, rows crossed between tenants or foreign, overlapping runs."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from bench.faults.parts import Run, Tenant, notifier
from shared.fhir.transform import TABLE_FOR_TYPE
from shared.store.schema import MIRRORED_TABLES, sync_runs


def acknowledged_but_missing(run: Run) -> int:
    """Deliveries answered 2xx whose change the mirror does not hold (at that version or later)."""
    return sum(missing_deliveries(run, tenant) for tenant in run.tenants if tenant.syncs)


def missing_deliveries(run: Run, tenant: Tenant, *, note: bool = True) -> int:
    rows: dict[tuple[str, str], tuple[int, bool]] = {}
    with run.engine.connect() as conn:
        for kind, name in TABLE_FOR_TYPE.items():
            t = MIRRORED_TABLES[name]
            for sid, seq, deleted in conn.execute(select(t.c.source_id, t.c.source_version_seq,
                                                         t.c.deleted_at.is_not(None)).where(
                                                             t.c.tenant_id == tenant.id)):
                rows[(kind, sid)] = (seq or 0, bool(deleted))
    missing = 0
    for delivery in notifier(tenant).deliveries():
        if delivery["status"] != "delivered":
            continue
        seq, deleted = rows.get((delivery["type"], delivery["id"]), (-1, False))
        # A delete must have removed the row; a create or update must be there at its version or
        # later (a later version, or the delete that followed it, also covers it).
        ok = deleted if delivery["action"] == "delete" else (deleted or seq >= int(delivery["version"]))
        if not ok:
            missing += 1
            if note and len(run.notes) < 8:
                run.notes.append(f"acknowledged, not applied: {tenant.id} {delivery['type']}/{delivery['id']} "
                                 f"v{delivery['version']} {delivery['action']}")
    return missing


def overlapping_runs(run: Run) -> None:
    """At most one run of a tenant and kind at a time, however many messages asked for one."""
    c = sync_runs.c
    with run.engine.connect() as conn:
        rows = conn.execute(select(c.tenant_id, c.kind, c.started_at, c.finished_at, c.status)
                            .order_by(c.tenant_id, c.kind, c.started_at)).all()
    run.count("runs", len(rows))
    for before, after in itertools.pairwise(rows):
        if before.tenant_id == after.tenant_id and before.kind == after.kind and (
                before.finished_at is None or before.finished_at > after.started_at):
            run.violations.append(f"{after.tenant_id}: two {after.kind} runs at once ({before.status} and "
                                  f"{after.status})")


def crossed_rows(run: Run, tenant: Tenant, snapshot: list[dict[str, Any]]) -> int:
    """Rows on the right (type, id, version) but with another lastUpdated than this tenant's source
    says: the three sources share ids and versions, so a row of one tenant written under another
    would pass the version comparison; its lastUpdated (milliseconds, per source) gives it away."""
    truth = {(e["type"], e["id"]): (str(e["versionId"]), datetime.fromisoformat(e["lastUpdated"].replace("Z", "+00:00")))
             for e in snapshot if not e["deleted"]}
    crossed = 0
    with run.engine.connect() as conn:
        for kind, name in TABLE_FOR_TYPE.items():
            t = MIRRORED_TABLES[name]
            for sid, version, updated in conn.execute(select(t.c.source_id, t.c.source_version, t.c.source_updated_at)
                                                      .where(t.c.tenant_id == tenant.id, t.c.deleted_at.is_(None))):
                expected = truth.get((kind, sid))
                if expected and expected[0] == (version or "") and abs(updated - expected[1]) > timedelta(milliseconds=1):
                    crossed += 1
                    if len(run.notes) < 8:
                        run.notes.append(f"{tenant.id} {kind}/{sid} v{version}: lastUpdated {updated.isoformat()} "
                                         f"is not its source's {expected[1].isoformat()}")
    return crossed


def foreign_rows(run: Run) -> int:
    ours = [t.id for t in run.tenants]
    with run.engine.connect() as conn:
        return sum(conn.execute(select(func.count()).select_from(t).where(t.c.tenant_id.not_in(ours))).scalar_one()
                   for t in MIRRORED_TABLES.values())
