"""Telemetry on the wire: with a connection string, azure-monitor-opentelemetry sends the app's
metrics and traces as Application Insights envelopes, custom dimensions as their properties.
The ingestion endpoint is a loopback server in this test; the app runs in a child process
(configuring OpenTelemetry is once per process)."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = """
import logging
from opentelemetry import _logs, metrics
from shared.bootstrap import start_telemetry
from shared.settings import load_settings
from shared.telemetry import telemetry

class HostForwarding(logging.Handler):
    # What the Functions worker puts on the root logger: every record it sees goes to the host,
    # which sends it to Application Insights as a trace of its own.
    def __init__(self):
        super().__init__()
        self.forwarded = []
    def emit(self, record):
        self.forwarded.append(record.name)

host = HostForwarding()
logging.getLogger().addHandler(host)
assert start_telemetry(load_settings(database_url="sqlite:///{db}"), host_forwards_logs=True)
instruments = telemetry()
instruments.records_synced("t1", "Patient", "full", 3)
instruments.webhook_answered("t1", "enqueued", 4.5)
instruments.freshness("t1", 42.0, 600.0, 0)
instruments.run_finished("t1", "full", "run-0123456789", "completed")
metrics.get_meter_provider().force_flush()
_logs.get_logger_provider().force_flush()
print("forwarded by the host:", sorted(set(n for n in host.forwarded if n.startswith("shared"))))
"""


@pytest.fixture
def ingestion() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    envelopes: list[dict[str, Any]] = []

    class Track(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path.startswith("/v2.1/track"):
                envelopes.extend(json.loads(body))
            answer = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Track)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", envelopes
    server.shutdown()


def test_metrics_and_traces_reach_application_insights_with_their_dimensions(
        ingestion: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    endpoint, envelopes = ingestion
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "APPLICATIONINSIGHTS_CONNECTION_STRING":
               f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={endpoint}",
           # Loopback only: no statsbeat to Microsoft, no Azure VM metadata probe, no offline retry folder.
           "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel",
           "TMPDIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", APP.format(db=tmp_path / "m.db")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    # Exported once: the sync.run line reached the exporter (below) and not the host's handler.
    assert "forwarded by the host: []" in run.stdout, run.stdout
    metrics, roles = {}, set()
    for envelope in envelopes:
        data = envelope["data"]
        if data["baseType"] == "MetricData":
            for metric in data["baseData"]["metrics"]:
                metrics[metric["name"]] = (data["baseData"].get("properties", {}), metric["value"])
                if metric["name"].startswith(("sync.", "webhook.")):  # ours, not the distro's own counters
                    roles.add(envelope["tags"].get("ai.cloud.role"))
    assert metrics["sync.records_synced"] == ({"tenant": "t1", "resource_type": "Patient", "kind": "full"}, 3)
    assert metrics["sync.freshness_lag"] == ({"tenant": "t1", "status": "within"}, 42.0)
    assert metrics["sync.runs"] == ({"tenant": "t1", "kind": "full", "outcome": "completed"}, 1)
    assert metrics["webhook.ack_latency"][0] == {"tenant": "t1", "outcome": "enqueued"}
    traces = [e["data"]["baseData"] for e in envelopes if e["data"]["baseType"] == "MessageData"]
    (run_trace,) = [t for t in traces if t["message"].startswith("sync.run ")]
    assert {k: run_trace["properties"][k] for k in ("tenant", "kind", "run_id", "outcome")} == {
        "tenant": "t1", "kind": "full", "run_id": "run-0123456789", "outcome": "completed"}
    assert roles | {e["tags"].get("ai.cloud.role") for e in envelopes if e["data"]["baseData"] is run_trace} \
        == {"fhir-mirror"}  # the cloud role name every instance shares
