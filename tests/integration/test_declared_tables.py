"""Tables a spec declares: `migrate` creates them, adds the columns a newer spec maps, never
drops or changes one (a changed type is reported and left), and nothing stored is lost."""
from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, select

from shared.records import MirrorRow
from shared.settings import load_settings, parse_tenants
from shared.store.declared import TableConflict, declare, find_table
from shared.store.engine import write_transaction
from shared.store.migrate import migrate
from shared.store.mirror import write_rows

BASE: dict[str, Any] = {
    "name": "evolving", "base_url": "https://x.example", "auth": {"kind": "none"},
    "entities": [{"name": "things", "list": {"path": "/things"}, "records": "$", "id": "id",
                  "table": {"name": "evolving_things"},
                  "columns": {"label": "label", "size": {"field": "size", "type": "integer"}}}]}


def migrate_with(database_url: str, tmp_path: Path, spec: dict[str, Any], lines: list[str]) -> list[str]:
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    tenants = parse_tenants(json.dumps([{"id": "evo", "name": "E", "source": "rest", "spec": "spec.json"}]),
                            source="t", spec_folder=tmp_path)
    return migrate(load_settings(database_url=database_url), tenants=tenants, report=lines.append)


def test_migrate_creates_then_extends_and_never_drops(database_url: str, engine: Engine, tmp_path: Path) -> None:
    warnings: list[str] = []
    first = migrate_with(database_url, tmp_path, BASE, warnings)
    assert first in (["created table evolving_things"], [])  # PostgreSQL keeps it for the session
    with write_transaction(engine) as conn:
        write_rows(conn, "evo", [MirrorRow("evolving_things", "a", datetime(2026, 1, 1, tzinfo=UTC),
                                           content={"label": "kept", "size": 3, "record": '{"id": "a"}'})])
    newer = copy.deepcopy(BASE)
    columns = newer["entities"][0]["columns"]
    del columns["size"]  # no longer mapped: the column stays, with its data
    columns["label"] = {"field": "label", "type": "integer"}  # another type: reported, not changed
    columns["made_on"] = {"field": "made", "type": "date"}  # new: added
    assert migrate_with(database_url, tmp_path, newer, warnings) == ["added column evolving_things.made_on"]
    assert len(warnings) == 1 and warnings[0].startswith("warning: evolving_things.label is VARCHAR(400) in the "
                                                         "database but BIGINT in the spec; left as it is"), warnings
    with engine.connect() as conn:
        names = {c["name"] for c in inspect(conn).get_columns("evolving_things")}
        table = find_table("evolving_things")
        stored = conn.execute(select(table.c.source_id, table.c.record, table.c.made_on)
                              .where(table.c.tenant_id == "evo")).one()
    assert {"size", "label", "made_on", "record", "tenant_id", "source_id", "deleted_at", "content_hash"} <= names
    assert tuple(stored) == ("a", '{"id": "a"}', None)
    assert migrate_with(database_url, tmp_path, newer, warnings) == []  # nothing left to do


def test_two_specs_declaring_one_table_differently_is_refused() -> None:
    from shared.rest.spec import SourceSpec

    one = SourceSpec.model_validate(BASE)
    other = copy.deepcopy(BASE)
    other["name"] = "another"
    other["entities"][0]["columns"]["extra"] = "x"
    try:
        declare([one, SourceSpec.model_validate(other)])
    except TableConflict as exc:
        assert "evolving_things" in str(exc) and "evolving" in str(exc) and "another" in str(exc)
    else:
        raise AssertionError("declared one table twice with different columns")
