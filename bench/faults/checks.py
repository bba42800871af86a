"""What a run checks after the drain: acknowledged changes missing, rows crossed between tenants or foreign, overlapping runs."""
from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from bench.faults.parts import Run, Tenant, mirrored_tables, notifier
from devtools.compare import record_digest
from shared.fhir.transform import TABLE_FOR_TYPE
from shared.store.declared import declare, find_table
from shared.store.schema import MIRRORED_TABLES, sync_runs


def acknowledged_but_missing(run: Run) -> int:
    """Deliveries answered 2xx whose change the mirror does not hold (at that version or later)."""
    return sum(missing_deliveries(run, tenant) for tenant in run.tenants if tenant.syncs)


def missing_deliveries(run: Run, tenant: Tenant, *, note: bool = True) -> int:
    if tenant.rest:
        return missing_rest_deliveries(run, tenant, note=note)
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


def missing_rest_deliveries(run: Run, tenant: Tenant, *, note: bool = True) -> int:
    """A REST tenant's events carry the record, and some sources state no version: so per record,
    the mirror must hold the content of the last acknowledged event or of a change after it (a
    reconcile may have brought a later one), or be deleted if that change was a deletion."""
    settings = tenant.settings()
    declare([settings.rest_spec()])
    held: dict[tuple[str, str], str | None] = {}  # (entity, id) -> digest of the live record, None if deleted
    stamps: dict[tuple[str, str], Any] = {}  # its stored version (updated-at, seen), for the note
    with run.engine.connect() as conn:
        for entity in settings.rest_spec().entities:
            t = find_table(entity.table_name)
            for sid, record, deleted, stamp, seen in conn.execute(
                    select(t.c.source_id, t.c.record, t.c.deleted_at.is_not(None), t.c.source_updated_at,
                           t.c.source_version).where(t.c.tenant_id == tenant.id)):
                held[(entity.name, sid)] = None if deleted else record_digest(json.loads(record))
                stamps[(entity.name, sid)] = (stamp, seen)
    since: dict[tuple[str, str], list[str | None]] = {}  # per record: its states from the last acknowledged event on
    history: dict[tuple[str, str], list[str]] = {}  # per record: its changes, for the note
    for delivery, change in tenant.sandbox.sender.deliveries_with_changes():
        key = (change.entity, change.id)
        state = None if change.action == "deleted" else record_digest(change.record)
        history.setdefault(key, []).append(f"{change.action} {change.at.isoformat()} {delivery['status']}"
                                           f"{' (held)' if state is not None and state == held.get(key) else ''}")
        if delivery["status"] == "delivered":
            since[key] = [state]
        elif key in since:
            since[key].append(state)
    missing = 0
    for key, states in since.items():
        if held.get(key) not in states:  # a record never written counts as deleted only if it is one
            if key not in held and None in states:
                continue
            missing += 1
            if note and len(run.notes) < 8:
                run.notes.append(f"acknowledged, not applied: {tenant.id} {key[0]}/{key[1]} "
                                 f"({'absent' if key not in held else 'deleted' if held[key] is None else 'other content'}"
                                 f", stored at {_stamp(*stamps[key]) if key in stamps else '-'}; its changes: "
                                 f"{'; '.join(history.get(key, []))})")
    return missing


def _stamp(updated: datetime, seen: str | None) -> str:
    """A stored REST row's version: its updated-at, and when it was seen (its version number, µs)."""
    moment = datetime.fromtimestamp(int(seen) / 1e6, UTC).isoformat() if seen and seen.isdigit() else seen
    return f"{updated.isoformat()}, seen {moment}"


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
    tables = mirrored_tables([t.settings() for t in run.tenants])
    with run.engine.connect() as conn:
        return sum(conn.execute(select(func.count()).select_from(find_table(name))
                                .where(find_table(name).c.tenant_id.not_in(ours))).scalar_one()
                   for name in tables)
