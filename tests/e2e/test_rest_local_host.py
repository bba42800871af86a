"""The four REST sources through the function app: function_app.py on the local host, its queues
and timers, each source's sandbox over HTTP, SQLite and PostgreSQL. Full sync, churn (HIE's and
PPB's webhooks brought to the host and applied), incremental (PPB: a diff), full again — after
each step every mirror equals its sandbox's truth."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.compare import compare, rest_mirrored, rest_truth
from devtools.localhost.serve import Booted, boot, wait_for_run
from devtools.sandbox.rest.apis import build_api
from devtools.sandbox.rest.server import RestConfig, RestSandbox
from devtools.synthetic import SyntheticCounts
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("hie-facilities", "ppb-premises", "cliniko", "pems")
SENDERS = ("hie-facilities", "ppb-premises")  # the sources that send webhooks
NEVER = "0 0 0 1 1 *"
EQUAL = "lost 0 [], unexpected 0 []"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rest:
    def __init__(self, booted: Booted, boxes: dict[str, RestSandbox], offset: list[timedelta]) -> None:
        self.booted, self.boxes, self.offset = booted, boxes, offset
        self.tenants = {t.id: t for t in booted.tenants}

    def sync(self, kind: str) -> None:
        started = datetime.now(UTC) - timedelta(seconds=1)  # runs are stamped with the real time
        for name in SOURCES:
            answer = httpx.post(f"{self.booted.host.url}/api/tenants/{name}/sync", json={"kind": kind})
            assert answer.status_code == 202, answer.text
        engine = self.booted.runtime.engine
        assert {name: wait_for_run(engine, name, kind, started, timeout=120) for name in SOURCES} == dict.fromkeys(
            SOURCES, "completed")

    def differences(self) -> dict[str, Any]:
        engine = self.booted.runtime.engine
        return {name: compare(rest_mirrored(engine, self.tenants[name]), rest_truth(box.api, self.tenants[name]))
                for name, box in self.boxes.items()}


@pytest.fixture
def rest(database_url: str, tmp_path: Path) -> Iterator[Rest]:
    port = free_port()
    boxes, tenants = {}, []
    for name in SOURCES:
        api = build_api(name, seed=6, records=200, counts=SyntheticCounts(3, 30, 120, 40), organizations=2)
        hook = f"http://127.0.0.1:{port}/api/webhooks/{name}/events" if name in SENDERS else None
        boxes[name] = RestSandbox(api, RestConfig(rate_limit=0, webhook_url=hook, webhook_secret=f"{name}-secret")).start()
        raw = json.loads((ROOT / "samples" / f"tenants.{name}.json").read_text())["tenants"][0]
        text = json.dumps(raw).replace("127.0.0.1:7072", f"127.0.0.1:{boxes[name].port}")
        tenants.append({**json.loads(text), **({"webhook_secrets": [f"{name}-secret"],
                                                 "webhook_allowed_ips": ["127.0.0.0/8"]} if name in SENDERS else {})})
    (tmp_path / "tenants.json").write_text(json.dumps({"tenants": tenants}))
    offset = [timedelta(0)]
    settings = load_settings(database_url=database_url, tenants_file=tmp_path / "tenants.json", fanout_schedule=NEVER)
    booted = boot(settings, port=port, say=lambda line: None, clock=lambda: datetime.now(UTC) + offset[0])
    try:
        yield Rest(booted, boxes, offset)
    finally:
        booted.stop()
        for box in boxes.values():
            box.stop()


def test_four_rest_sources_through_the_function_app(rest: Rest) -> None:
    rest.sync("full")
    assert {k: d.summary() for k, d in rest.differences().items()} == dict.fromkeys(SOURCES, EQUAL)

    for box in rest.boxes.values():
        box.churn(creates=5, updates=5, deletes=3)
    for name in SENDERS:
        sender = rest.boxes[name].sender
        assert sender is not None and sender.drain(timeout=60)
        assert {d["status"] for d in sender.deliveries()} == {"delivered"}
    assert rest.booted.host.wait_idle(timeout=60)
    after_webhooks = rest.differences()
    # HIE and PPB sent every change, deletions too: their mirrors are already equal.
    assert {name: after_webhooks[name].summary() for name in SENDERS} == dict.fromkeys(SENDERS, EQUAL)

    rest.offset[0] = timedelta(minutes=5)  # the churn is now older than the reconcile's two-minute lag
    rest.sync("incremental")
    after_incremental = rest.differences()
    for name in ("cliniko", "pems"):  # creates and updates in; deletions wait for a full listing
        assert after_incremental[name].lost == [], name
        assert len(after_incremental[name].unexpected) <= 3, name
    assert {name: after_incremental[name].summary() for name in SENDERS} == dict.fromkeys(SENDERS, EQUAL)

    rest.sync("full")
    assert {k: d.summary() for k, d in rest.differences().items()} == dict.fromkeys(SOURCES, EQUAL)
    status = rest.booted.host.status()["queues"]
    assert status["changes"]["poisoned"] == 0 and status["reconcile"]["poisoned"] == 0
