"""A source this project never saw: a spec file written here, a server written here (offset
paging with a stated total; a Link header; an API key header), mirrored end to end into a table
the spec declares — then the same server answering one page in the wrong shape fails the run,
naming the missing path, with nothing from that page written."""
from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import Engine, func, select

from shared.settings import TenantConfig, parse_tenants
from shared.source.breaker import MemoryBreakerStore
from shared.source.errors import BadResponse
from shared.source.registry import SourceRegistry
from shared.store.declared import declare, ensure_tables, find_table
from shared.store.engine import write_transaction
from shared.store.runs import start_run
from shared.store.schema import sync_runs
from shared.sync.reconcile import run_reconcile

WARDS = [{"wardCode": f"W{n:03d}", "title": f"Ward {n}", "beds": n % 40, "opened": f"20{10 + n % 15}-03-01",
          "meta": {"changed": f"2026-11-{1 + n % 28:02d}T10:00:00+03:00"}} for n in range(23)]
SHIFTS = [{"shift_id": 900 + n, "ward": f"W{n % 5:03d}", "on_call": n % 2 == 0} for n in range(7)]
SPEC = {
    "name": "county-wards",
    "base_url": "https://wards.example.org/api",
    "auth": {"kind": "api-key", "header": "X-Api-Key"},
    "page_size": {"default": 5, "max": 50},
    "entities": [
        {"name": "wards", "list": {"path": "/wards"}, "records": "result.items", "id": "wardCode",
         "updated_at": {"field": "meta.changed"},
         "paginator": {"kind": "offset", "offset_param": "skip", "limit_param": "take", "total": "result.count"},
         "read": {"path": "/wards/{id}"},
         "table": {"name": "county_wards"},
         "columns": {"title": {"field": "title", "length": 100}, "beds": {"field": "beds", "type": "integer"},
                     "opened_on": {"field": "opened", "type": "date"}}},
        {"name": "shifts", "list": {"path": "/shifts"}, "records": "$", "id": "shift_id",
         "paginator": {"kind": "link-header"},
         "table": {"name": "county_shifts"},
         "columns": {"ward": "ward", "on_call": {"field": "on_call", "type": "boolean"}}},
    ],
}


class Unseen(BaseHTTPRequestHandler):
    broken_offset: int | None = None  # answer this offset of /wards in another shape

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if self.headers.get("X-Api-Key") != "unseen-key":
            return self._json(401, {"error": "no"})
        if url.path == "/api/wards":
            skip, take = int(query.get("skip", 0)), int(query.get("take", 5))
            if skip == self.broken_offset:
                return self._json(200, {"result": {"wards": WARDS[skip:skip + take]}})
            return self._json(200, {"result": {"items": WARDS[skip:skip + take], "count": len(WARDS)}})
        if url.path.startswith("/api/wards/"):
            code = url.path.rsplit("/", 1)[1]
            found = [w for w in WARDS if w["wardCode"] == code]
            return self._json(200, found[0]) if found else self._json(404, {})
        if url.path == "/api/shifts":
            page = int(query.get("p", 0))
            link = {} if page >= 2 else {"Link": f'<http://{self.headers["Host"]}/api/shifts?p={page + 1}>; rel="next"'}
            return self._json(200, SHIFTS[page * 3:page * 3 + 3], link)
        return self._json(404, {})

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    handler = type("Handler", (Unseen,), {"broken_offset": None})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def unseen_tenant(tmp_path: Path, port: int) -> TenantConfig:
    (tmp_path / "unseen.json").write_text(json.dumps(SPEC))
    (t,) = parse_tenants(json.dumps([{"id": "wards", "name": "County wards", "source": "rest", "spec": "unseen.json",
                                      "base_url": f"http://127.0.0.1:{port}/api", "api_key": "unseen-key"}]),
                         source="tenants.json", spec_folder=tmp_path)
    return t


def full(engine: Engine, t: TenantConfig) -> Any:
    async def go() -> None:
        async with httpx.AsyncClient() as http:
            with write_transaction(engine) as conn:
                lease = start_run(conn, t.id, "full")
            await run_reconcile(engine, SourceRegistry(http, MemoryBreakerStore()).source(t), t, lease)
    try:
        asyncio.run(go())
    finally:
        with engine.connect() as conn:
            run = conn.execute(select(sync_runs).where(sync_runs.c.tenant_id == t.id)
                               .order_by(sync_runs.c.started_at.desc())).first()
    return run


def rows(engine: Engine, table: str) -> dict[str, Any]:
    t = find_table(table)
    with engine.connect() as conn:
        return {r.source_id: r for r in conn.execute(select(t).where(t.c.tenant_id == "wards"))}


def test_a_source_known_only_by_its_spec_is_mirrored(engine: Engine, server: ThreadingHTTPServer,
                                                     tmp_path: Path) -> None:
    t = unseen_tenant(tmp_path, server.server_address[1])
    assert ensure_tables(engine, declare([t.rest_spec()])) in (
        ["created table county_wards", "created table county_shifts"], [])  # PostgreSQL keeps them a session
    run = full(engine, t)
    assert (run.status, run.processed, run.inserted, run.errored) == ("completed", 30, 30, 0)
    wards, shifts = rows(engine, "county_wards"), rows(engine, "county_shifts")
    assert sorted(wards) == sorted(str(w["wardCode"]) for w in WARDS)
    assert sorted(shifts) == [str(s["shift_id"]) for s in SHIFTS]
    w5 = wards["W005"]
    assert (w5.title, w5.beds, w5.opened_on.isoformat(), w5.source_updated_at) == (
        "Ward 5", 5, "2015-03-01", datetime(2026, 11, 6, 7, tzinfo=UTC))
    assert json.loads(w5.record) == WARDS[5] and shifts["901"].on_call is False


def test_an_answer_in_another_shape_fails_the_run_naming_the_path_and_writes_nothing_of_it(
        engine: Engine, server: ThreadingHTTPServer, tmp_path: Path) -> None:
    t = unseen_tenant(tmp_path, server.server_address[1])
    ensure_tables(engine, declare([t.rest_spec()]))
    server.RequestHandlerClass.broken_offset = 10  # type: ignore[attr-defined]  # the third page of five
    with pytest.raises(BadResponse) as caught:
        full(engine, t)
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs).where(sync_runs.c.tenant_id == "wards")).one()
        table = find_table("county_wards")
        stored = conn.execute(select(func.count()).select_from(table).where(table.c.tenant_id == "wards")).scalar()
    assert "'result.items'" in str(caught.value) and "'result.items'" in run.error
    assert (run.status, stored) == ("failed", 10)  # the two pages before it, committed with their checkpoint


def test_an_event_for_an_entity_with_a_read_is_read_again_from_the_source(engine: Engine, server: ThreadingHTTPServer,
                                                                          tmp_path: Path) -> None:
    """docs/webhooks.md: an event of an entity the spec can read one by one is a notice, not the
    truth — the record is read again (a stale payload is not written), and a record the source
    no longer has (404) becomes a tombstone whatever the event's action said."""
    from shared.metrics import Metrics
    from shared.queues.memory import InMemoryQueues
    from shared.queues.messages import CHANGES_QUEUE, ChangeMessage, decode
    from shared.sync.apply import apply_change
    from shared.webhooks.receive import receive_webhook
    from shared.webhooks.signatures import hmac_sha256_hex

    hooked = {**SPEC, "webhook": {"entity": "wards", "signature_header": "x-wards-signature", "event_id": "id",
                                  "timestamp": "at", "data": "ward"}}
    (tmp_path / "unseen.json").write_text(json.dumps(hooked))
    (t,) = parse_tenants(json.dumps([{"id": "wards", "name": "County wards", "source": "rest", "spec": "unseen.json",
                                      "base_url": f"http://127.0.0.1:{server.server_address[1]}/api",
                                      "api_key": "unseen-key", "webhook_secrets": ["ward-secret"]}]),
                         source="tenants.json", spec_folder=tmp_path)
    ensure_tables(engine, declare([t.rest_spec()]))
    assert full(engine, t).status == "completed"
    saved = list(WARDS)
    try:
        WARDS[3] = {**WARDS[3], "title": "Ward 3 renamed", "meta": {"changed": "2026-12-01T10:00:00+03:00"}}
        del WARDS[4]
        queues = InMemoryQueues()
        for n, (code, action) in enumerate((("W003", "updated"), ("W004", "updated"))):
            body = json.dumps({"id": f"e{n}", "action": action, "at": "2026-12-01T07:00:01Z",
                               "ward": {"wardCode": code, "title": "a stale payload"}}).encode()
            answer = receive_webhook(engine, queues, t, "events", {"Content-Type": "application/json",
                                     "x-wards-signature": hmac_sha256_hex("ward-secret", body)}, body,
                                     datetime.now(UTC), Metrics())
            assert answer.status == 202, answer.body
        messages = [decode(text, ChangeMessage) for text, _ in queues.pending(CHANGES_QUEUE)]
        assert [(m.id, m.data) for m in messages] == [("W003", None), ("W004", None)]  # notices: no payload kept

        async def apply() -> list[str]:
            async with httpx.AsyncClient() as http:
                source = SourceRegistry(http, MemoryBreakerStore()).source(t)
                return [(await apply_change(engine, source, m)).outcome for m in messages]
        assert asyncio.run(apply()) == ["applied", "deleted"]
        wards = rows(engine, "county_wards")
        assert (wards["W003"].title, wards["W003"].source_updated_at) == ("Ward 3 renamed",
                                                                          datetime(2026, 12, 1, 7, tzinfo=UTC))
        assert wards["W004"].deleted_at is not None
    finally:
        WARDS[:] = saved
