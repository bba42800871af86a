"""Writing a batch of mirrored rows: role resolution around the version-guarded upsert.

Appointments and invoices may name only a PractitionerRole. The dashboard reads sessions by
practitioner, so the writer fills ``practitioner_id`` from the mirrored role before the upsert
(so the content hash covers it) and, when roles arrive after the rows that name them, fills the
rows already stored.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, select, update

from shared.records import MirrorRow
from shared.store.guard import UpsertCounts
from shared.store.schema import MIRRORED_TABLES, practitioner_roles
from shared.store.upsert import KEY_CHUNK, upsert_rows

ROLE_TABLES = ("sessions", "invoices")


def write_rows(conn: Connection, tenant_id: str, rows: Sequence[MirrorRow], *, now: datetime | None = None) -> UpsertCounts:
    """Upsert one tenant's rows (any tables) in the caller's transaction; returns the counts."""
    roles = {r.source_id: r.content.get("practitioner_id") for r in rows
             if r.table == "practitioner_roles" and not r.is_tombstone}
    wanted = {r.content["practitioner_role_id"] for r in rows
              if r.table in ROLE_TABLES and r.content.get("practitioner_role_id")
              and not r.content.get("practitioner_id")}
    missing = sorted(wanted - roles.keys())
    if missing:
        roles.update(_stored_roles(conn, tenant_id, missing))
    if wanted:
        rows = [_with_practitioner(r, roles) for r in rows]
    counts = upsert_rows(conn, tenant_id, rows, now=now)
    written_roles = {k: v for k, v in roles.items() if v and k not in missing}
    if written_roles:
        _backfill(conn, tenant_id, written_roles)
    return counts


def _with_practitioner(row: MirrorRow, roles: dict[str, str | None]) -> MirrorRow:
    role = row.content.get("practitioner_role_id") if row.table in ROLE_TABLES else None
    if not role or row.content.get("practitioner_id") or not roles.get(role):
        return row
    return dataclasses.replace(row, content={**row.content, "practitioner_id": roles[role]})


def _stored_roles(conn: Connection, tenant_id: str, ids: list[str]) -> dict[str, str | None]:
    c = practitioner_roles.c
    found: dict[str, str | None] = {}
    for start in range(0, len(ids), KEY_CHUNK):
        query = select(c.source_id, c.practitioner_id).where(
            c.tenant_id == tenant_id, c.source_id.in_(ids[start:start + KEY_CHUNK]), c.deleted_at.is_(None))
        found.update((role, practitioner) for role, practitioner in conn.execute(query))
    return found


def _backfill(conn: Connection, tenant_id: str, roles: dict[str, str]) -> None:
    # Only rows still without a practitioner: nothing already resolved is rewritten.
    for name in ROLE_TABLES:
        c = MIRRORED_TABLES[name].c
        for role, practitioner in roles.items():
            conn.execute(update(MIRRORED_TABLES[name]).where(
                c.tenant_id == tenant_id, c.practitioner_role_id == role, c.practitioner_id.is_(None),
            ).values(practitioner_id=practitioner))
