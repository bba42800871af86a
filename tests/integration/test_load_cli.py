"""`python -m shared.cli load`: real files, real databases, exit codes and messages."""
from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from devtools.synthetic import SyntheticCounts, generate
from shared.cli import main
from shared.importer.load import LoadAborted, load_files
from shared.settings import load_settings
from shared.store.engine import create_store_engine
from shared.store.schema import clients, invoices, practitioner_roles, practitioners, sessions, tenants

ROOT = Path(__file__).resolve().parents[2]
SECRET = "client-secret-never-printed"
NAME_IN_DATA = "Zebedee"  # a patient name that must never reach output


@pytest.fixture
def tenants_file(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps([{
        "id": "demo", "name": "Demo", "timezone": "Australia/Sydney", "fhir_base_url": "http://127.0.0.1:9/main",
        "client_id": "c", "client_secret": SECRET, "webhook_secrets": ["w"],
    }]))
    return path


def resources(**counts: int) -> list[dict[str, Any]]:
    return list(generate(SyntheticCounts(**{"referrals": 0, **counts}), seed=3))  # counts below are exact


def write_ndjson(path: Path, items: list[Any]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def write_bundle(path: Path, bundle_type: str, entries: list[dict[str, Any]], **extra: Any) -> Path:
    path.write_text(json.dumps({"resourceType": "Bundle", "type": bundle_type, **extra, "entry": entries}))
    return path


def run_cli(database_url: str, tenants_file: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--database-url", database_url, "--tenants-file", str(tenants_file), *args])
    out, err = capsys.readouterr()
    return code, out, err


def count(engine: Engine, table: Any, **where: Any) -> int:
    query = select(func.count()).select_from(table)
    for k, v in where.items():
        query = query.where(table.c[k] == v)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def test_load_ndjson_then_again_is_unchanged(engine: Engine, database_url: str, tenants_file: Path,
                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = resources(practitioners=3, patients=40, appointments=120, invoices=30)
    path = write_ndjson(tmp_path / "export.ndjson", data)
    code, out, err = run_cli(database_url, tenants_file, "load", "--tenant", "demo", str(path), capsys=capsys)
    assert code == 0, err
    assert f"{len(data)} entries" in out and f"inserted {len(data)}" in out
    assert "records/s — done" in err and "100.0%" in err
    assert (count(engine, practitioners), count(engine, practitioner_roles), count(engine, clients),
            count(engine, sessions), count(engine, invoices)) == (3, 3, 40, 120, 30)
    assert count(engine, tenants, id="demo") == 1
    with engine.connect() as conn:  # every session resolved to a practitioner, directly or by role
        assert conn.execute(select(func.count()).where(sessions.c.practitioner_id.is_(None))).scalar_one() == 0
    code, out, _ = run_cli(database_url, tenants_file, "load", "--tenant", "demo", str(path), capsys=capsys)
    assert code == 0 and f"unchanged {len(data)}" in out and "inserted 0" in out


def test_bundle_types_and_history_deletes(engine: Engine, database_url: str, tenants_file: Path,
                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = resources(practitioners=1, patients=4, appointments=6, invoices=2)
    searchset = write_bundle(tmp_path / "search.json", "searchset",
                             [{"fullUrl": f"x/{r['id']}", "resource": r, "search": {"mode": "match"}} for r in data]
                             + [{"resource": {"resourceType": "OperationOutcome", "id": "oo"}, "search": {"mode": "outcome"}}],
                             total=len(data), link=[{"relation": "self", "url": "x"}])
    appt = next(r for r in data if r["resourceType"] == "Appointment")
    patient = next(r for r in data if r["resourceType"] == "Patient")
    newer = {**appt, "status": "cancelled", "meta": {"versionId": "9", "lastUpdated": "2030-01-01T00:00:00Z"}}
    history = write_bundle(tmp_path / "history.json", "history", [
        {"resource": newer, "request": {"method": "PUT", "url": f"Appointment/{appt['id']}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{patient['id']}"},
         "response": {"status": "204", "lastModified": "2030-01-02T00:00:00Z"}},
        {"request": {"method": "DELETE", "url": "Observation/OB-1"}},
    ])
    transaction = write_bundle(tmp_path / "tx.json", "transaction", [
        {"resource": {"resourceType": "Patient", "id": "PT-new", "meta": {"lastUpdated": "2030-01-01T00:00:00Z"}},
         "request": {"method": "PUT", "url": "Patient/PT-new"}}])
    single = tmp_path / "one.json"
    single.write_text(json.dumps({"resourceType": "Practitioner", "id": "PR-solo", "name": [{"family": "Solo"}]}))
    code, out, err = run_cli(database_url, tenants_file, "load", "--tenant", "demo",
                             str(searchset), str(history), str(transaction), str(single), capsys=capsys)
    assert code == 0, err
    assert "4 file(s)" in out and "skipped (types not mirrored): Observation 1, OperationOutcome 1" in out
    with engine.connect() as conn:
        status = conn.execute(select(sessions.c.status).where(sessions.c.source_id == appt["id"])).scalar_one()
        deleted = conn.execute(select(clients.c.deleted_at).where(clients.c.source_id == patient["id"])).scalar_one()
    assert status == "cancelled" and deleted is not None and deleted.year == 2030
    assert count(engine, clients, source_id="PT-new") == 1 and count(engine, practitioners, source_id="PR-solo") == 1


def test_gzip_ndjson(engine: Engine, database_url: str, tenants_file: Path, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    data = resources(practitioners=1, patients=5, appointments=5, invoices=0)
    path = tmp_path / "Patient.ndjson.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in data)
    code, out, _ = run_cli(database_url, tenants_file, "load", "--tenant", "demo", str(path), capsys=capsys)
    assert code == 0 and f"inserted {len(data)}" in out


def test_malformed_line_stops_before_its_batch_and_names_the_line(
        engine: Engine, database_url: str, tenants_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = resources(practitioners=0, patients=25, appointments=0, invoices=0)
    lines = [json.dumps(r) for r in data]
    lines.insert(22, '{"resourceType": "Patient", "id": "PT-bad", "name": [{"given": ["' + NAME_IN_DATA + '"]')
    path = tmp_path / "broken.ndjson"
    path.write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(database_url, tenants_file, "load", "--tenant", "demo", "--batch-size", "10",
                             str(path), capsys=capsys)
    assert code == 2
    assert f"{path}: line 23: invalid JSON" in err
    assert "committed through" in err and "line 20" in err and "re-loading is idempotent" in err
    assert NAME_IN_DATA not in out + err
    assert count(engine, clients) == 20  # two whole batches; nothing of the third


def test_malformed_bundle_entry_is_named(database_url: str, tenants_file: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = resources(practitioners=0, patients=3, appointments=0, invoices=0)
    cases: dict[str, str | bytes] = {
        "truncated.json": json.dumps({"resourceType": "Bundle", "type": "collection",
                                      "entry": [{"resource": r} for r in data]})[:-40],
        "not-object.json": json.dumps({"resourceType": "Bundle", "entry": [{"resource": data[0]}, {"resource": [1]}]}),
        "no-type.json": json.dumps({"resourceType": "Bundle", "entry": [{"resource": {"id": "x"}}]}),
        "empty-entry.json": json.dumps({"resourceType": "Bundle", "entry": [{"fullUrl": "x"}]}),
        "array.json": "[1, 2]",
        "entry-scalar.json": json.dumps({"resourceType": "Bundle", "entry": [{"resource": data[0]}, 7]}),
        "entry-object.json": json.dumps({"resourceType": "Bundle", "entry": {"resource": data[0]}}),
        "binary.json": b"\xff\xfe{\x00",
    }
    expected = {
        "truncated.json": "invalid JSON", "not-object.json": "entry 2: expected a JSON object",
        "no-type.json": "entry 1: not a FHIR resource", "empty-entry.json": "entry 1: entry has neither",
        "array.json": "document: expected a JSON object", "binary.json": "document:",
        "entry-scalar.json": "entry 2: expected a JSON object", "entry-object.json": "Bundle.entry must be an array",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        code, _out, err = run_cli(database_url, tenants_file, "load", "--tenant", "demo", str(path), capsys=capsys)
        assert code == 2, name
        assert f"{path}: " in err and expected[name] in err, (name, err)
        assert "Traceback" not in err


def test_unmappable_resources_are_listed_and_the_rest_stored(engine: Engine, database_url: str, tenants_file: Path,
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = resources(practitioners=0, patients=3, appointments=0, invoices=0)
    bad = [{"resourceType": "Appointment", "id": "AP-x", "status": "postponed"},
           {"resourceType": "Appointment", "id": "AP-y", "status": "booked", "start": f"{NAME_IN_DATA} o'clock"}]
    path = write_ndjson(tmp_path / "mixed.ndjson", good + bad)
    code, out, _err = run_cli(database_url, tenants_file, "load", "--tenant", "demo", str(path), capsys=capsys)
    assert code == 1
    assert "errored 2" in out and "inserted 3" in out
    assert "line 4: Appointment/AP-x: unmapped status 'postponed'" in out
    assert "line 5: Appointment/AP-y: invalid element(s): start" in out
    assert NAME_IN_DATA not in out
    assert count(engine, clients) == 3


def test_unknown_tenant_missing_file_and_bad_config(database_url: str, tenants_file: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(database_url, tenants_file, "load", "--tenant", "nope", str(tenants_file), capsys=capsys)
    assert code == 2 and "unknown tenant 'nope' (known: demo)" in err
    code, _, err = run_cli(database_url, tenants_file, "load", "--tenant", "demo", str(tmp_path / "x.ndjson"), capsys=capsys)
    assert code == 2 and "x.ndjson: no such file" in err
    bad = tmp_path / "bad-tenants.json"
    bad.write_text(json.dumps([{"id": "demo", "name": "D", "timezone": "Nowhere/City",
                                "fhir_base_url": "http://x", "client_id": "c", "client_secret": SECRET}]))
    code, out, err = run_cli(database_url, bad, "load", "--tenant", "demo", str(bad), capsys=capsys)
    assert code == 2 and "timezone: Value error, unknown IANA timezone" in err and SECRET not in out + err


def test_unmigrated_database_says_to_migrate(tmp_path: Path, tenants_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_ndjson(tmp_path / "a.ndjson", resources(practitioners=1, patients=0, appointments=0, invoices=0))
    code, _, err = run_cli(f"sqlite:///{tmp_path / 'empty.db'}", tenants_file, "load", "--tenant", "demo", str(path),
                           capsys=capsys)
    assert code == 2 and "no such table" in err and "migrate" in err


def test_tenants_command_lists_without_secrets(tenants_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--tenants-file", str(tenants_file), "tenants"])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("demo\tDemo\tAustralia/Sydney\thalaxy\t1 webhook secret(s)\tenabled")
    assert SECRET not in out + err and "1 tenant(s) valid" in err


def test_load_files_reports_what_was_committed_on_abort(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "x.ndjson"
    path.write_text(json.dumps({"resourceType": "Patient", "id": "PT-1"}) + "\n[]\n")
    with pytest.raises(LoadAborted) as caught:
        load_files(engine, "demo", [path], batch_size=1, progress_stream=io.StringIO())
    assert caught.value.report.committed_through == f"{path}: line 1"
    assert caught.value.error.location == "line 2"


def test_generate_then_load_through_the_real_command(tmp_path: Path, tenants_file: Path) -> None:
    """The installed entry point, as a user runs it: a subprocess with its own settings."""
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    bundle = tmp_path / "sample.json"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    base = [sys.executable, "-m", "shared.cli", "--database-url", db, "--tenants-file", str(tenants_file)]
    for args in (["generate", "--out", str(bundle), "--patients", "30", "--appointments", "90"], ["migrate"],
                 ["load", "--tenant", "demo", str(bundle)]):
        done = subprocess.run(base + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert "inserted 245" in done.stdout  # 5 practitioners + 5 roles + 30 patients + 90 + 100 invoices + 15 referrals
    engine = create_store_engine(load_settings(database_url=db))
    try:
        assert count(engine, sessions) == 90 and count(engine, clients) == 30
    finally:
        engine.dispose()
