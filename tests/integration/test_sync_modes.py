"""Sync modes (docs/reconcile.md, "Sync modes"): Cliniko's patients-only mode, as
samples/tenants.cliniko.json declares it, against the Cliniko sandbox over HTTP — due on its own
schedule in the fan-out (apart from the incremental run of everything), its run reads patients
only, and the sync route starts it by name; bad modes are refused at start-up and by the route."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from sqlalchemy import select

from devtools.compare import rest_mirrored, rest_truth
from devtools.sandbox.rest.apis import build_api
from devtools.sandbox.rest.server import RestConfig, RestSandbox
from devtools.synthetic import SyntheticCounts
from shared.queues.memory import InMemoryQueues
from shared.queues.messages import ReconcileMessage, decode
from shared.settings import SettingsError, parse_tenants
from shared.store.schema import sync_runs
from tests.fakes import installed_runtime, registered_functions

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def cliniko(database_url: str, tmp_path: Path) -> Iterator[tuple[RestSandbox, Any]]:
    box = RestSandbox(build_api("cliniko", seed=4, counts=SyntheticCounts(2, 20, 60, 20), anchor=NOW),
                      RestConfig(rate_limit=0)).start()
    text = (ROOT / "samples" / "tenants.cliniko.json").read_text().replace("127.0.0.1:7072", f"127.0.0.1:{box.port}")
    tenants = json.loads(text)["tenants"]
    with installed_runtime(database_url, tmp_path, tenants, InMemoryQueues(), reconcile_time_budget=300) as rt:
        yield box, rt
    box.stop()


def drain(rt: Any) -> list[ReconcileMessage]:
    """Run every queued reconcile message to its end, as the queue trigger would; the messages."""
    from shared.service.reconciles import reconcile_step

    seen = []
    while messages := rt.queues.receive("reconcile", max_messages=16, visibility_timeout=30):
        for message in messages:
            seen.append(decode(message.text, ReconcileMessage))
            asyncio.run(reconcile_step(rt, message.text))
            rt.queues.delete("reconcile", message)
    return seen


def stale_entities(box: RestSandbox, rt: Any) -> set[str]:
    tenant = rt.tenant("cliniko")
    return {key[0] for key in rest_mirrored(rt.engine, tenant) ^ rest_truth(box.api, tenant)}


def test_the_patients_only_mode_runs_on_its_own_schedule_and_reads_patients_only(
        cliniko: tuple[RestSandbox, Any]) -> None:
    from shared.service.reconciles import fan_out

    box, rt = cliniko
    at = datetime(2026, 12, 3, 1, 7, tzinfo=UTC)  # 12:07 in Sydney
    assert fan_out(rt, at) == [("cliniko", "full")]  # never loaded: its full run alone, no mode yet
    drain(rt)
    assert stale_entities(box, rt) == set()
    # Loaded: the incremental of everything and the mode are both due, each on its own.
    assert sorted(fan_out(rt, at)) == [("cliniko", "incremental"), ("cliniko", "incremental/patients-only")]
    for message in rt.queues.receive("reconcile", max_messages=16, visibility_timeout=30):
        rt.queues.delete("reconcile", message)
    box.churn(creates=0, updates=40, deletes=0)  # patients, appointments, invoices and practitioners change
    assert stale_entities(box, rt) == {"practitioners", "patients", "appointments", "invoices"}
    rt.clock = lambda: datetime.now(UTC) + timedelta(minutes=5)  # incremental windows end a little before now
    rt.queues.send("reconcile", ReconcileMessage(tenant="cliniko", reconcile="incremental",
                                                 mode="patients-only").model_dump_json(exclude_none=True))
    drain(rt)
    assert stale_entities(box, rt) == {"practitioners", "appointments", "invoices"}  # patients only
    with rt.engine.connect() as conn:
        run = conn.execute(select(sync_runs.c.kind, sync_runs.c.mode, sync_runs.c.status)
                           .order_by(sync_runs.c.started_at.desc())).first()
    assert tuple(run) == ("incremental", "patients-only", "completed")
    # The mode ran: not due again until its next fire (every 15 minutes); the incremental of
    # everything never ran, and a mode's run does not count as one: still due.
    assert fan_out(rt, at + timedelta(minutes=1)) == [("cliniko", "incremental")]
    assert ("cliniko", "incremental/patients-only") in fan_out(rt, datetime.now(UTC) + timedelta(minutes=16))


def call_sync(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = func.HttpRequest("POST", "http://localhost/api/tenants/cliniko/sync", body=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"}, route_params={"tenant": "cliniko"})
    response = registered_functions()["trigger_sync"].get_user_function()(request)
    return response.status_code, json.loads(response.get_body())


def test_the_sync_route_starts_a_mode_by_name_and_refuses_unknown_ones(cliniko: tuple[RestSandbox, Any]) -> None:
    _box, rt = cliniko
    assert call_sync({"kind": "incremental", "mode": "everything"}) == (
        400, {"error": "unknown-mode", "mode": "everything", "modes": ["patients-only"]})
    assert call_sync({"kind": "full", "mode": "patients-only"}) == (
        400, {"error": "mode-needs-incremental", "mode": "patients-only"})
    assert rt.queues.count("reconcile") == 0  # the refusals queued nothing
    status, body = call_sync({"kind": "incremental", "mode": "patients-only"})
    assert status == 202 and (body["mode"], body["entities"]) == ("patients-only", ["patients"])
    (message,) = drain(rt)
    assert (message.mode, message.run_id) == ("patients-only", body["runId"])
    with rt.engine.connect() as conn:
        assert conn.execute(select(sync_runs.c.mode, sync_runs.c.status).where(
            sync_runs.c.id == body["runId"])).one() == ("patients-only", "completed")
    functions = registered_functions()
    detail = functions["sync_run"].get_user_function()(func.HttpRequest(
        "GET", f"http://localhost/api/tenants/cliniko/sync/runs/{body['runId']}", body=b"",
        route_params={"tenant": "cliniko", "run_id": body["runId"]}))
    assert json.loads(detail.get_body())["mode"] == "patients-only"
    page = functions["status_page"].get_user_function()(func.HttpRequest("GET", "http://localhost/api/status",
                                                                           body=b"")).get_body().decode()
    assert '<td data-label="Kind">incremental · patients-only</td>' in page


def test_modes_naming_entities_the_source_lacks_are_refused_at_start_up() -> None:
    tenants = json.loads((ROOT / "samples" / "tenants.cliniko.json").read_text())["tenants"]
    tenants[0]["modes"] = [{"name": "patients-only", "entities": ["clients"], "schedule": "0 */15 * * * *"},
                           {"name": "patients-only", "entities": ["patients"], "schedule": "0 */15 * * * *"}]
    with pytest.raises(SettingsError) as refused:
        parse_tenants(json.dumps(tenants), source="tenants.json")
    lines = str(refused.value).splitlines()
    assert any("tenants[0](id=cliniko).modes[0].entities: clients: not the source's (it has practitioners, "
               "patients, appointments, invoices)" in line for line in lines), lines
    assert any("modes[1].name: 'patients-only' is named twice" in line for line in lines), lines
    fhir = [{"id": "x", "name": "X", "fhir_base_url": "http://h/main", "client_id": "c", "client_secret": "s",
             "modes": [{"name": "patients", "entities": ["patients"], "schedule": "0 */15 * * * *"}]}]
    with pytest.raises(SettingsError, match=r"modes\[0\].entities: patients: not the source's"):
        parse_tenants(json.dumps(fhir), source="tenants.json")
