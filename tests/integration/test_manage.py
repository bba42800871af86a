"""Sync management routes on both databases, called as the Functions host calls them."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from sqlalchemy import insert, select, update

from shared.queues.memory import InMemoryQueues
from shared.queues.messages import ChangeMessage, ReconcileMessage, decode, encode
from shared.store.engine import write_transaction
from shared.store.runs import claim
from shared.store.schema import sync_runs
from tests.fakes import installed_runtime, registered_functions

TENANTS = [{"id": t, "name": t, "fhir_base_url": "http://127.0.0.1:9/main", "client_id": "c", "client_secret": "s",
            "enabled": t != "off"} for t in ("alpha", "beta", "off")]
JSON = {"Content-Type": "application/json"}


class FlakyQueues(InMemoryQueues):
    down = False

    def send(self, queue: str, text: str, *, delay: float = 0) -> None:
        if self.down:
            raise ConnectionError("queue service unreachable")
        super().send(queue, text, delay=delay)


@pytest.fixture
def rt(database_url: str, tmp_path: Path) -> Iterator[Any]:
    with installed_runtime(database_url, tmp_path, TENANTS, FlakyQueues()) as runtime:
        yield runtime


def call(name: str, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None,
         params: dict[str, str] | None = None, **route: str) -> tuple[int, dict[str, Any]]:
    request = func.HttpRequest(method, f"http://localhost/api/{name}", body=body, headers=headers or {},
                               params=params or {}, route_params=route)
    response = registered_functions()[name].get_user_function()(request)
    return response.status_code, json.loads(response.get_body())


def trigger(tenant: str, kind: str = "full") -> tuple[int, dict[str, Any]]:
    return call("trigger_sync", "POST", json.dumps({"kind": kind}).encode(), JSON, tenant=tenant)


def test_trigger_queues_one_run_per_kind_and_names_the_active_one(rt: Any) -> None:
    status, body = trigger("alpha")
    assert status == 202 and body["status"] == "queued"
    (message,) = rt.queues.receive("reconcile", max_messages=5, visibility_timeout=30)
    assert decode(message.text, ReconcileMessage) == ReconcileMessage(tenant="alpha", reconcile="full",
                                                                       run_id=body["runId"])
    assert trigger("alpha") == (409, {"error": "already-running", "runId": body["runId"], "kind": "full"})
    assert trigger("alpha", "incremental")[0] == 202  # another kind has its own slot
    assert trigger("beta")[0] == 202  # another tenant too
    assert call("sync_run", tenant="alpha", run_id=body["runId"])[1]["status"] == "queued"


def test_trigger_refuses_bad_requests_and_changes_nothing(rt: Any) -> None:
    cases = [
        (b'{"kind": "full"}', {"Content-Type": "text/plain"}, "alpha", (415, "unsupported-media-type")),
        (b'{"kind": "weekly"}', JSON, "alpha", (400, "bad-body")),
        (b'{"kind": "full", "tenant": "beta"}', JSON, "alpha", (400, "bad-body")),
        (b"{not json", JSON, "alpha", (400, "invalid-json")),
        (b"", JSON, "alpha", (400, "invalid-json")),
        (b'{"kind": "full", "pad": "' + b"x" * 5000 + b'"}', JSON, "alpha", (413, "body-too-large")),
        (b'{"kind": "full"}', JSON, "nope", (404, "unknown-tenant")),
        (b'{"kind": "full"}', JSON, "off", (409, "tenant-disabled")),
    ]
    for body, headers, tenant, (status, error) in cases:
        got_status, got = call("trigger_sync", "POST", body, headers, tenant=tenant)
        assert (got_status, got["error"]) == (status, error), body[:40]
    assert call("trigger_sync", "POST", b'{"kind": 1}', JSON, tenant="alpha")[1]["fields"] == ["kind"]
    # The refusal says what the field allows, without echoing what was sent.
    weekly = call("trigger_sync", "POST", b'{"kind": "weekly"}', JSON, tenant="alpha")[1]
    assert "'full', 'incremental' or 'hot'" in weekly["problems"]["kind"] and "weekly" not in json.dumps(weekly)
    with rt.engine.connect() as conn:
        assert conn.execute(select(sync_runs.c.id)).all() == []
    assert rt.queues.count("reconcile") == 0


def test_a_queue_that_is_down_answers_503_and_frees_the_slot(rt: Any) -> None:
    rt.queues.down = True
    status, body = trigger("alpha")
    assert (status, body) == (503, {"error": "temporarily-unavailable"})
    with rt.engine.connect() as conn:
        assert conn.execute(select(sync_runs.c.status, sync_runs.c.error)).one() == (
            "failed", "its message could not be enqueued")
    rt.queues.down = False
    assert trigger("alpha")[0] == 202


def test_progress_history_and_tenant_isolation(rt: Any) -> None:
    run_id = trigger("alpha")[1]["runId"]
    with write_transaction(rt.engine) as conn:
        claim(conn, run_id)  # a worker took it
        conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(
            records_total=200, processed=50, inserted=40, step="Patient: 50 of 200",
            started_at=datetime.now(UTC) - timedelta(seconds=30)))
    status, run = call("sync_run", tenant="alpha", run_id=run_id)
    assert status == 200 and (run["status"], run["percentage"], run["step"]) == ("running", 25.0, "Patient: 50 of 200")
    assert run["records"] == {"processed": 50, "total": 200} and run["counts"]["inserted"] == 40
    eta = datetime.fromisoformat(run["estimatedCompletion"]) - datetime.now(UTC)
    assert timedelta(seconds=80) < eta < timedelta(seconds=100)  # 50 in 30 s: 150 more in ~90 s
    # Another tenant cannot see, list or cancel it.
    assert call("sync_run", tenant="beta", run_id=run_id) == (404, {"error": "unknown-run"})
    assert call("sync_runs", tenant="beta")[1]["runs"] == []
    assert call("cancel_sync_run", "POST", tenant="beta", run_id=run_id) == (404, {"error": "unknown-run"})
    assert call("sync_run", tenant="alpha", run_id=run_id)[1]["status"] == "running"
    assert call("sync_run", tenant="alpha", run_id="x" * 500) == (404, {"error": "unknown-run"})
    # Cancelled: the slot is free again; cancelling twice says it is over.
    assert call("cancel_sync_run", "POST", tenant="alpha", run_id=run_id) == (
        200, {"runId": run_id, "status": "cancelled"})
    assert call("cancel_sync_run", "POST", tenant="alpha", run_id=run_id) == (
        409, {"error": "already-finished", "runId": run_id, "status": "cancelled"})
    second = trigger("alpha")[1]["runId"]
    with write_transaction(rt.engine) as conn:
        lease = claim(conn, second)
        from shared.store.runs import finish
        finish(conn, lease, "completed")
    status, history = call("sync_runs", params={"limit": "10"}, tenant="alpha")
    assert status == 200 and [r["runId"] for r in history["runs"]] == [second, run_id]
    summary = history["summary"]
    assert (summary["total"], summary["succeeded"], summary["failed"], summary["averageOver"]) == (2, 1, 0, 1)
    assert summary["lastSuccessAt"] is not None and history["runs"][0]["percentage"] == 100.0
    for bad in ("0", "101", "x", "-1", "1.5", "２"):
        assert call("sync_runs", params={"limit": bad}, tenant="alpha")[0] == 400, bad


def test_cleanup_fails_only_runs_gone_silent(rt: Any) -> None:
    silent, fresh = trigger("alpha")[1]["runId"], trigger("beta")[1]["runId"]
    with write_transaction(rt.engine) as conn:
        conn.execute(update(sync_runs).where(sync_runs.c.id == silent).values(
            heartbeat_at=datetime.now(UTC) - timedelta(hours=1)))
    assert call("cleanup_sync_runs", "POST") == (200, {"failedStale": [silent], "count": 1})
    assert call("sync_run", tenant="alpha", run_id=silent)[1]["status"] == "failed_stale"
    assert call("sync_run", tenant="beta", run_id=fresh)[1]["status"] == "queued"


def test_redrive_moves_back_only_the_tenants_poison_messages(rt: Any) -> None:
    def change(tenant: str, rid: str) -> str:
        return encode(ChangeMessage(tenant=tenant, type="Patient", id=rid, action="update"))

    for text in (change("alpha", "PT-1"), change("beta", "PT-2"), "not a message", change("alpha", "PT-3")):
        rt.queues.send("changes-poison", text)
    assert call("redrive_poison", "POST", tenant="alpha") == (200, {"tenant": "alpha", "moved": 2, "leftForOthers": 2})
    moved = rt.queues.receive("changes", max_messages=10, visibility_timeout=30)
    assert sorted(decode(m.text, ChangeMessage).id for m in moved) == ["PT-1", "PT-3"]
    assert rt.queues.count("changes-poison") == 2  # beta's and the unreadable one stay
    # Right after alpha's pass, beta's own re-drive finds its message (it once stayed hidden 60 s).
    assert call("redrive_poison", "POST", tenant="beta") == (200, {"tenant": "beta", "moved": 1, "leftForOthers": 1})
    assert call("redrive_poison", "POST", tenant="nope") == (404, {"error": "unknown-tenant"})


def test_one_redrive_at_a_time(rt: Any) -> None:
    from shared.store.leases import drop_lease, take_lease

    with write_transaction(rt.engine) as conn:  # another instance's re-drive is under way
        assert take_lease(conn, "redrive:changes-poison", "elsewhere", datetime.now(UTC), timedelta(minutes=5))
    status, body = call("redrive_poison", "POST", tenant="alpha")
    assert (status, body["error"]) == (409, "redrive-running")
    with write_transaction(rt.engine) as conn:
        drop_lease(conn, "redrive:changes-poison", "elsewhere")
    assert call("redrive_poison", "POST", tenant="alpha")[0] == 200
    with write_transaction(rt.engine) as conn:  # a holder that died: its lease lapses
        later = datetime.now(UTC) + timedelta(minutes=6)
        assert take_lease(conn, "redrive:changes-poison", "next", later, timedelta(minutes=5))


def test_sync_status_tells_freshness_webhooks_breaker_queues_silence_and_credentials(rt: Any) -> None:
    from shared.store.schema import source_health, sync_cursors, tenant_metrics, webhook_silence

    now = datetime.now(UTC)
    with write_transaction(rt.engine) as conn:
        conn.execute(insert(sync_cursors).values(tenant_id="alpha", resource_type="Patient",
                                                 watermark=now - timedelta(minutes=7), updated_at=now))
        conn.execute(insert(sync_cursors).values(tenant_id="beta", resource_type="Patient", watermark=now,
                                                 updated_at=now))
        conn.execute(insert(tenant_metrics).values(tenant_id="alpha", name="webhook.event.patient-update", value=4,
                                                   updated_at=now - timedelta(seconds=30)))
        from shared.metrics import minute_bucket
        conn.execute(insert(tenant_metrics).values(tenant_id="alpha", name=minute_bucket(now), value=30,
                                                   updated_at=now))
        conn.execute(insert(source_health).values(breaker_key="alpha|127.0.0.1:9", state="open", failures=5,
                                                  opened_at=now.timestamp(), probe_until=0.0,
                                                  not_before=now.timestamp() + 60, updated_at=now))
        conn.execute(insert(webhook_silence).values(tenant_id="alpha", resource_type="Appointment", changes=3,
                                                    first_seen_at=now, last_seen_at=now, last_run_id="r1",
                                                    last_change_at=now))
    run_id = trigger("alpha", "incremental")[1]["runId"]
    with write_transaction(rt.engine) as conn:
        from shared.store.runs import finish
        finish(conn, claim(conn, run_id), "failed", error="token refused: invalid_scope")
    rt.queues.send("changes", "{}")
    status, body = call("sync_status", tenant="alpha")
    assert status == 200 and body["tenant"] == "alpha" and body["enabled"] is True
    assert body["freshness"]["Patient"]["ageSeconds"] >= 420 and list(body["freshness"]) == ["Patient"]
    assert body["webhooks"] == {"patient-update": {"count": 4, "lastAt": (now - timedelta(seconds=30)).isoformat()}}
    assert body["webhookRate"] == {"perMinute": 2.0, "overMinutes": 15}  # 30 this minute, over 15 minutes
    assert body["breaker"]["state"] == "open" and body["breaker"]["retryAfterUntil"] is not None
    assert body["queues"]["changes"]["depth"] == 1 and body["queues"]["changes"]["oldestMessageAgeSeconds"] >= 0
    assert body["silentWebhooks"][0]["resourceType"] == "Appointment" and body["silentWebhooks"][0]["changes"] == 3
    assert body["credentials"]["status"] == "refused" and "invalid_scope" in body["credentials"]["detail"]
    assert body["failureStreak"] == 1 and set(body["nextRuns"]) == {"full", "hot", "incremental"}
    assert body["rateBudget"] is None  # no request to the source from this process yet
    other = call("sync_status", tenant="beta")[1]  # beta sees none of alpha's state
    assert (other["webhooks"], other["silentWebhooks"], other["breaker"]["state"]) == ({}, [], "closed")
    assert other["webhookRate"]["perMinute"] == 0
    assert other["credentials"]["status"] == "unknown"
    assert call("sync_status", tenant="nope") == (404, {"error": "unknown-tenant"})


def test_replay_queues_an_incremental_from_since_for_the_types_asked(rt: Any) -> None:
    def replay(**params: str) -> tuple[int, dict[str, Any]]:
        return call("replay_sync", "POST", params=params, tenant="alpha")

    status, body = replay(type="Invoice,Patient", since="2026-01-01T00:00:00Z")
    assert status == 202 and (body["types"], body["since"]) == (["Patient", "Invoice"], "2026-01-01T00:00:00+00:00")
    (message,) = rt.queues.receive("reconcile", max_messages=5, visibility_timeout=30)
    sent = decode(message.text, ReconcileMessage)
    assert (sent.reconcile, sent.types, sent.run_id) == ("incremental", ["Patient", "Invoice"], body["runId"])
    assert sent.since == datetime(2026, 1, 1, tzinfo=UTC)
    assert replay(since="2026-01-01T00:00:00+10:00")[1] == {  # the incremental slot is taken
        "error": "already-running", "runId": body["runId"], "kind": "incremental"}
    for params in ({"since": "2026-01-01T00:00:00"}, {"since": "yesterday"}, {}, {"since": "2999-01-01T00:00:00Z"},
                   {"since": "2026-01-01T00:00:00Z", "type": "Observation"},
                   # The calendar's edges: once a 202 whose worker overflowed five times (issue 24, row 3).
                   {"since": "0001-01-01T00:00:00+14:00"}, {"since": "0001-01-01T00:00:00Z"},
                   {"since": "1899-12-31T23:59:59Z"}, {"since": "9999-12-31T23:59:59-12:00"}):
        assert replay(**params)[0] == 400, params
