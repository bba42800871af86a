"""Writing mirrored rows: role resolution around the version-guarded upsert.

Halaxy names the practitioner of an appointment or invoice only through a PractitionerRole
(the practitioner at one clinic). The dashboard reads sessions by practitioner, so the writer
fills ``practitioner_id`` from the mirrored role before the upsert (the content hash covers
it) and, when a role arrives after rows that name it, fills the rows already stored.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, select, update

from shared.records import MirrorRow
from shared.store.guard import UpsertCounts
from shared.store.schema import MIRRORED_TABLES, practitioner_roles
from shared.store.upsert import KEY_CHUNK, upsert_rows

ROLE_TABLES = ("sessions", "invoices")


def roles_in(rows: Iterable[MirrorRow]) -> dict[str, str]:
    """role id -> practitioner id, for the live role rows among ``rows``."""
    return {r.source_id: r.content["practitioner_id"] for r in rows
            if r.table == "practitioner_roles" and not r.is_tombstone and r.content.get("practitioner_id")}


def unresolved_roles(rows: Iterable[MirrorRow]) -> set[str]:
    return {r.content["practitioner_role_id"] for r in rows
            if r.table in ROLE_TABLES and r.content.get("practitioner_role_id") and not r.content.get("practitioner_id")}


def resolve_roles(rows: Sequence[MirrorRow], roles: Mapping[str, str | None]) -> list[MirrorRow]:
    """Rows naming only a role get that role's practitioner, when it is known. Pure."""
    return [_with_practitioner(r, roles) for r in rows]


def _with_practitioner(row: MirrorRow, roles: Mapping[str, str | None]) -> MirrorRow:
    if row.table not in ROLE_TABLES or row.content.get("practitioner_id"):
        return row
    practitioner = roles.get(row.content.get("practitioner_role_id") or "")
    if not practitioner:
        return row
    return dataclasses.replace(row, content={**row.content, "practitioner_id": practitioner})


def stored_roles(conn: Connection, tenant_id: str, ids: Sequence[str] | None = None) -> dict[str, str]:
    """The tenant's mirrored roles (all of them, or these ids): role id -> practitioner id."""
    c = practitioner_roles.c
    base = select(c.source_id, c.practitioner_id).where(
        c.tenant_id == tenant_id, c.deleted_at.is_(None), c.practitioner_id.is_not(None))
    if ids is None:
        return dict(conn.execute(base).all())
    found: dict[str, str] = {}
    for start in range(0, len(ids), KEY_CHUNK):
        query = base.where(c.source_id.in_(ids[start:start + KEY_CHUNK]))
        found.update((role, practitioner) for role, practitioner in conn.execute(query))
    return found


def backfill_practitioners(conn: Connection, tenant_id: str, roles: Mapping[str, str]) -> None:
    """Fill rows stored before their role was: only rows still without a practitioner."""
    for name in ROLE_TABLES:
        table = MIRRORED_TABLES[name]
        for role, practitioner in roles.items():
            conn.execute(update(table).where(
                table.c.tenant_id == tenant_id, table.c.practitioner_role_id == role,
                table.c.practitioner_id.is_(None),
            ).values(practitioner_id=practitioner))


def write_rows(conn: Connection, tenant_id: str, rows: Sequence[MirrorRow], *, now: datetime | None = None,
               changed: list[tuple[str, str, datetime]] | None = None) -> UpsertCounts:
    """Upsert one tenant's rows (any tables) in the caller's transaction; returns the counts
    (and, into ``changed``, what was written: see upsert_rows)."""
    new_roles = roles_in(rows)
    roles: dict[str, str | None] = dict(new_roles)
    missing = sorted(unresolved_roles(rows) - roles.keys())
    if missing:
        roles.update(stored_roles(conn, tenant_id, missing))
    counts = upsert_rows(conn, tenant_id, resolve_roles(rows, roles) if len(roles) else rows, now=now,
                         changed=changed)
    if new_roles:
        backfill_practitioners(conn, tenant_id, new_roles)
    return counts
