"""Telemetry: the names and dimensions operators' alerts and workbook depend on, captured with
OpenTelemetry's in-memory reader and log exporter while the real functions run against the
sandbox (both databases). Nothing exported may carry patient data."""
from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from devtools.sandbox.data import SandboxData
from devtools.sandbox.notify import halaxy_bundle
from devtools.sandbox.server import Sandbox, SandboxConfig
from devtools.synthetic import SyntheticCounts
from shared.bootstrap import runtime
from shared.queues.memory import InMemoryQueues
from shared.queues.messages import ChangeMessage, ReconcileMessage, encode
from shared.service.reconciles import fan_out
from shared.telemetry import DIMENSIONS, LOGGER_NAME, Telemetry, dimensions, use_telemetry
from tests.fakes import installed_runtime, registered_functions

NOW = datetime.now(UTC)
Points = dict[str, list[tuple[dict[str, Any], float]]]


def call(name: str, arg: Any) -> Any:
    result = registered_functions()[name].get_user_function()(arg)
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


def points(reader: InMemoryMetricReader) -> Points:
    found: Points = defaultdict(list)
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value: float = point.value if isinstance(point, NumberDataPoint) else point.sum
                    found[metric.name].append((dict(point.attributes or {}), value))
    return found


@pytest.fixture
def captured(database_url: str, tmp_path: Path) -> Iterator[tuple[Sandbox, InMemoryQueues, InMemoryMetricReader,
                                                                  InMemoryLogRecordExporter]]:
    box = Sandbox(SandboxData(SyntheticCounts(2, 20, 60, 10), seed=8, anchor=NOW), SandboxConfig(rate_limit=0)).start()
    tenant = {"fhir_base_url": box.base_url, "client_id": "sandbox-client"}
    tenants: list[dict[str, Any]] = [
        {**tenant, "id": "demo", "name": "Demo", "client_secret": "sandbox-secret", "webhook_scheme": "halaxy",
         "webhook_secrets": ["hook-secret"], "webhook_header": "X-Halaxy-Secret"},
        {**tenant, "id": "locked", "name": "Locked", "client_secret": "not-the-secret"}]
    reader, logs = InMemoryMetricReader(), InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    handler = LoggingHandler(logger_provider=logger_provider)  # what configure_azure_monitor attaches
    app_logger = logging.getLogger(LOGGER_NAME)
    app_logger.addHandler(handler)
    level = app_logger.level
    app_logger.setLevel(logging.INFO)
    use_telemetry(Telemetry(MeterProvider(metric_readers=[reader])))
    queues = InMemoryQueues()
    try:
        with installed_runtime(database_url, tmp_path, tenants, queues):
            yield box, queues, reader, logs
    finally:
        use_telemetry(None)
        app_logger.removeHandler(handler)
        app_logger.setLevel(level)
        box.stop()


def test_the_functions_emit_the_metrics_and_dimensions_the_alerts_query(captured: Any) -> None:
    box, queues, reader, logs = captured
    # A full reconcile of each tenant: demo completes, locked's credentials are refused.
    for tenant in ("demo", "locked"):
        call("reconcile_step", func.QueueMessage(body=encode(ReconcileMessage(tenant=tenant, reconcile="full")).encode()))
    # A webhook for a changed patient, and its change applied.
    change = next(c for c in box.data.churn(updates=40) if c.type == "Patient")
    body = json.dumps(halaxy_bundle(change, box.base_url, 1)).encode()
    request = func.HttpRequest("POST", "http://localhost/api/webhooks/demo/patient-update", body=body,
                               headers={"Content-Type": "application/fhir+json", "X-Halaxy-Secret": "hook-secret"},
                               route_params={"tenant": "demo", "event": "patient-update"})
    assert call("receive_webhook", request).status_code == 202
    forged = func.HttpRequest("POST", "http://localhost/api/webhooks/demo/patient-update", body=body,
                              headers={"Content-Type": "application/fhir+json", "X-Halaxy-Secret": "wrong"},
                              route_params={"tenant": "demo", "event": "patient-update"})
    assert call("receive_webhook", forged).status_code == 401
    (message,) = queues.receive("changes", max_messages=5, visibility_timeout=30)
    call("apply_change_message", func.QueueMessage(body=message.text.encode()))
    queues.delete("changes", message)  # as the host does once the function returned
    queues.send("changes-poison", encode(ChangeMessage(tenant="demo", type="Patient", id="PT-1")))
    fan_out(runtime())

    found = points(reader)
    synced = {(a["tenant"], a["resource_type"], a["kind"]): v for a, v in found["sync.records_synced"]}
    assert synced[("demo", "Patient", "full")] == 20 and synced[("demo", "Appointment", "full")] == 60
    assert synced[("demo", "Patient", "webhook")] == 1
    assert not any(t == "locked" for t, _, _ in synced)
    runs = {(a["tenant"], a["kind"], a["outcome"]): v for a, v in found["sync.runs"]}
    assert runs == {("demo", "full", "completed"): 1, ("locked", "full", "failed"): 1}
    assert [a for a, _ in found["source.token_failures"]] == [{"tenant": "locked", "reason": "refused"}]
    acks = {a["outcome"]: v for a, v in found["webhook.ack_latency"]}
    assert set(acks) == {"enqueued", "rejected"} and all(a["tenant"] == "demo" for a, _ in found["webhook.ack_latency"])
    lag = {a["tenant"]: (a["status"], v) for a, v in found["sync.freshness_lag"]}
    assert list(lag) == ["demo"] and lag["demo"][0] == "within" and 0 <= lag["demo"][1] < 60  # locked never synced
    assert {a["tenant"]: v for a, v in found["sync.failed_run_streak"]} == {"demo": 0, "locked": 1}
    depth = {a["queue"]: v for a, v in found["queue.depth"]}
    assert depth["changes"] == 0 and depth["reconcile"] >= 1  # the fan-out just queued the due runs
    assert {a["queue"]: v for a, v in found["queue.poison_messages"]} == {"changes-poison": 1, "reconcile-poison": 0}
    assert {a["queue"] for a, _ in found["queue.oldest_age"]} == {"changes", "reconcile"}
    for name, series in found.items():
        for attributes, _value in series:
            assert set(attributes) <= DIMENSIONS, (name, attributes)

    # Each finished run is a trace whose customDimensions carry the run id.
    run_logs = [r.log_record for r in logs.get_finished_logs() if str(r.log_record.body).startswith("sync.run ")]
    dims = sorted((r.attributes["tenant"], r.attributes["outcome"]) for r in run_logs)
    assert dims == [("demo", "completed"), ("locked", "failed")]
    assert all(len(str(r.attributes["run_id"])) >= 8 for r in run_logs)

    # No patient data in anything exported: names, birth dates, phones, emails of every patient.
    private = set()
    for resource in box.data.snapshot():
        if resource.get("type") == "Patient":
            stored = box.data.read("Patient", resource["id"])
            assert stored is not None
            patient = stored.resource
            private |= {n for name in patient.get("name", []) for n in [name.get("family"), *name.get("given", [])] if n}
            private |= {t["value"] for t in patient.get("telecom", []) if t.get("value")}
            private.add(patient.get("birthDate"))
    private.discard(None)
    assert len(private) > 40
    exported = [str(v) for series in found.values() for attributes, _ in series for v in attributes.values()]
    for record in logs.get_finished_logs():
        exported.append(str(record.log_record.body))
        exported.extend(str(v) for v in (record.log_record.attributes or {}).values())
    leaks = [text for text in exported if any(p in text for p in private if len(p) > 3)]
    assert leaks == []


def test_a_dimension_outside_the_closed_set_is_refused() -> None:
    assert dimensions(tenant="t1", outcome="completed", run_id=None) == {"tenant": "t1", "outcome": "completed"}
    assert dimensions(tenant="x" * 100)["tenant"] == "x" * 64
    with pytest.raises(ValueError, match=r"\['family_name'\] are not allowed"):
        dimensions(tenant="t1", family_name="Citizen")


def test_without_a_connection_string_telemetry_is_a_no_op(tmp_path: Path) -> None:
    from shared.bootstrap import start_telemetry
    from shared.settings import load_settings

    assert start_telemetry(load_settings(database_url=f"sqlite:///{tmp_path / 'm.db'}")) is False
    instruments = Telemetry()  # the API's global provider: nothing configured, nothing recorded, no error
    instruments.records_synced("t1", "Patient", "full", 3)
    instruments.freshness("t1", 12.0, 600.0, 0)
    instruments.webhook_answered("t1", "enqueued", 1.5)
