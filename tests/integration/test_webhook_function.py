"""The webhook HTTP function, called as the Functions host calls it (func.HttpRequest), on both databases."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from sqlalchemy import func as sql
from sqlalchemy import select

from devtools.sandbox.data import Change
from devtools.sandbox.notify import halaxy_bundle, json_event
from shared.queues.memory import InMemoryQueues
from shared.queues.messages import ChangeMessage, decode
from shared.store.schema import inbox
from shared.webhooks.signatures import hmac_sha256_hex
from tests.fakes import installed_runtime, registered_functions

AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
TENANTS: list[dict[str, Any]] = [
    {"id": "alpha", "name": "A", "fhir_base_url": "http://127.0.0.1:9/main", "client_id": "c", "client_secret": "s",
     "webhook_scheme": "halaxy", "webhook_secrets": ["alpha-old", "alpha-new"], "webhook_header": "X-Halaxy-Secret"},
    {"id": "beta", "name": "B", "fhir_base_url": "http://127.0.0.1:9/main", "client_id": "c", "client_secret": "s",
     "webhook_scheme": "hmac-sha256", "webhook_secrets": ["beta-secret"]},
    {"id": "gamma", "name": "G", "fhir_base_url": "http://127.0.0.1:9/main", "client_id": "c", "client_secret": "s",
     "webhook_secrets": ["gamma-secret"], "enabled": False},
]


class BrokenQueues(InMemoryQueues):
    def send(self, queue: str, text: str, *, delay: float = 0) -> None:
        raise ConnectionError("queue service unreachable")


@pytest.fixture
def queues(database_url: str, tmp_path: Path) -> Iterator[InMemoryQueues]:
    queues = InMemoryQueues()
    with installed_runtime(database_url, tmp_path, TENANTS, queues):
        yield queues


def post(tenant: str, event: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    request = func.HttpRequest("POST", f"http://localhost/api/webhooks/{tenant}/{event}", body=body,
                               headers=headers, route_params={"tenant": tenant, "event": event})
    response = registered_functions()["receive_webhook"].get_user_function()(request)
    return response.status_code, json.loads(response.get_body())


def backport(number: int, rid: str = "AP-1") -> bytes:
    return json.dumps(halaxy_bundle(Change("Appointment", rid, "update", 2, AT), "http://x/main", number)).encode()


HALAXY = {"Content-Type": "application/fhir+json", "X-Halaxy-Secret": "alpha-new"}


def messages(queues: InMemoryQueues) -> list[ChangeMessage]:
    found = queues.receive("changes", max_messages=32, visibility_timeout=0.01)
    return [decode(m.text, ChangeMessage) for m in found]


def test_an_authenticated_notification_is_enqueued_once_and_duplicates_are_acknowledged(
        queues: InMemoryQueues) -> None:
    assert post("alpha", "appointment-update", backport(7), HALAXY) == (202, {"accepted": 1})
    ((message,),) = [messages(queues)]
    assert (message.tenant, message.type, message.id, message.action) == ("alpha", "Appointment", "AP-1", "update")
    assert message.event_key == "sub:http://x/main/Subscription/sub-appointment-update#7"
    assert post("alpha", "appointment-update", backport(7), HALAXY) == (200, {"duplicate": True})
    assert queues.count("changes") == 1  # the duplicate was not enqueued again
    old = HALAXY | {"X-Halaxy-Secret": "alpha-old"}  # rotation: the old secret still works
    assert post("alpha", "appointment-update", backport(8, "AP-2"), old) == (202, {"accepted": 1})


@pytest.mark.parametrize(("event", "kind", "action"), [
    ("appointment.created", "Appointment", "create"), ("appointment.updated", "Appointment", "update"),
    ("appointment.cancelled", "Appointment", "update"), ("patient.created", "Patient", "create"),
    ("patient.updated", "Patient", "update"), ("invoice.paid", "Invoice", "update")])
def test_past_tense_event_names_are_accepted(queues: InMemoryQueues, event: str, kind: str, action: str) -> None:
    """The names a dashboard registers (issue 24, row 11); the re-read decides what the row becomes."""
    body = json.dumps({"resourceType": kind, "id": "X-1"}).encode()
    assert post("alpha", event, body, HALAXY) == (202, {"accepted": 1})
    ((message,),) = [messages(queues)]
    assert (message.type, message.id, message.action) == (kind, "X-1", action)


def test_hmac_tenant_and_cross_tenant_forgery(queues: InMemoryQueues) -> None:
    body = json.dumps(json_event(Change("Invoice", "IN-5", "create", 1, AT))).encode()
    signed_by_beta = {"Content-Type": "application/json", "X-Webhook-Signature": hmac_sha256_hex("beta-secret", body)}
    assert post("beta", "invoice-create", body, signed_by_beta) == (202, {"accepted": 1})
    # beta's valid signature on alpha's route, or alpha's header value on beta's: never accepted.
    assert post("alpha", "invoice-create", body, signed_by_beta | {"X-Halaxy-Secret": "beta-secret"}) == (
        401, {"error": "bad-secret"})
    assert post("beta", "invoice-create", body, {"Content-Type": "application/json",
                                                  "X-Webhook-Signature": hmac_sha256_hex("alpha-new", body)}) == (
        401, {"error": "bad-signature"})
    assert [m.tenant for m in messages(queues)] == ["beta"]


@pytest.mark.parametrize(("tenant", "event", "body", "headers", "expected"), [
    ("nobody", "appointment-update", backport(1), HALAXY, (404, "unknown-tenant")),
    ("gamma", "appointment-update", backport(1), HALAXY, (403, "tenant-disabled")),
    ("alpha", "appointment-update", backport(1), HALAXY | {"X-Halaxy-Secret": "wrong"}, (401, "bad-secret")),
    ("alpha", "appointment-update", backport(1), {"X-Halaxy-Secret": "alpha-new"}, (415, "unsupported-content-type")),
    ("alpha", "appointment-update", b"x" * 300_000, HALAXY, (413, "body-too-large")),
    ("alpha", "appointment-update", b"{not json", HALAXY, (400, "malformed-json")),
    ("alpha", "patient-update", backport(1), HALAXY, (400, "event-type-mismatch")),
    ("alpha", "weather-report", backport(1), HALAXY, (400, "unknown-event")),
    # A signed delivery naming Patient ".." once wrote a junk tombstone clients(alpha, '..').
    ("alpha", "patient-update", b'{"resourceType": "Patient", "id": ".."}', HALAXY, (400, "bad-resource-id")),
])
def test_bad_deliveries_get_a_4xx_reason_and_change_nothing(queues: InMemoryQueues, tenant: str, event: str,
                                                            body: bytes, headers: dict[str, str],
                                                            expected: tuple[int, str]) -> None:
    assert post(tenant, event, body, headers) == (expected[0], {"error": expected[1]})
    assert queues.count("changes") == 0
    from shared.bootstrap import runtime

    with runtime().engine.connect() as conn:
        assert conn.execute(select(sql.count()).select_from(inbox)).scalar_one() == 0


def test_no_2xx_without_an_enqueue_and_the_retry_is_not_a_duplicate(database_url: str, tmp_path: Path) -> None:
    with installed_runtime(database_url, tmp_path, TENANTS, BrokenQueues()):
        assert post("alpha", "appointment-update", backport(3), HALAXY) == (503, {"error": "temporarily-unavailable"})
    with installed_runtime(database_url, tmp_path, TENANTS, InMemoryQueues()):
        # The sender's retry goes through: the failed attempt left no inbox record.
        assert post("alpha", "appointment-update", backport(3), HALAXY) == (202, {"accepted": 1})


class BuggyQueues(InMemoryQueues):
    def send(self, queue: str, text: str, *, delay: float = 0) -> None:
        raise ZeroDivisionError("a bug on the way to the queue")


def test_a_bug_in_the_receiver_is_raised_not_answered_as_unavailable(database_url: str, tmp_path: Path) -> None:
    """A 503 would have the sender retry something that can never work; the host answers 500."""
    with installed_runtime(database_url, tmp_path, TENANTS, BuggyQueues()), pytest.raises(ZeroDivisionError):
        post("alpha", "appointment-update", backport(5), HALAXY)
    with installed_runtime(database_url, tmp_path, TENANTS, InMemoryQueues()):  # nothing was claimed
        assert post("alpha", "appointment-update", backport(5), HALAXY) == (202, {"accepted": 1})


def test_deliveries_are_counted_per_tenant_by_outcome_and_reason(queues: InMemoryQueues) -> None:
    from shared.bootstrap import runtime
    from shared.store.metrics import read_metrics

    post("alpha", "appointment-update", backport(1), HALAXY)
    post("alpha", "appointment-update", backport(1), HALAXY)  # duplicate
    post("alpha", "appointment-update", backport(2), HALAXY | {"X-Halaxy-Secret": "wrong"})
    post("alpha", "appointment-update", b"{not json", HALAXY)
    post("beta", "invoice-create", b"{}", {"Content-Type": "application/json"})  # no signature
    post("nobody", "appointment-update", backport(1), HALAXY)  # unknown tenants are not counted
    rt = runtime()
    rt.metrics.flush(rt.engine)
    with rt.engine.connect() as conn:
        alpha, beta, nobody = (read_metrics(conn, t) for t in ("alpha", "beta", "nobody"))
    minutes = {k: alpha.pop(k) for k in list(alpha) if k.startswith("webhook.minute.")}
    assert sum(minutes.values()) == 4 and len(minutes) <= 2  # every delivery in its minute (one, or two at :59)
    hours = {k: alpha.pop(k) for k in list(alpha) if k.startswith("webhook.hour.")}
    assert sum(hours.values()) == 4 and len(hours) <= 2  # and in its hour, for the status page's chart
    beta = {k: v for k, v in beta.items() if not k.startswith(("webhook.minute.", "webhook.hour."))}
    assert dict(alpha.items()) == {
        "webhook.received": 4, "webhook.enqueued": 1, "webhook.duplicate": 1,
        "webhook.rejected.bad-secret": 1, "webhook.rejected.malformed-json": 1,
        "webhook.event.appointment-update": 1}  # accepted deliveries per event type (the status's "last webhook")
    assert beta == {"webhook.received": 1, "webhook.rejected.missing-signature": 1}
    assert nobody == {}


def test_an_expired_inbox_record_is_renewed_and_the_fan_out_cleans_up(queues: InMemoryQueues) -> None:
    from datetime import timedelta

    from shared.bootstrap import runtime
    from shared.store.engine import write_transaction
    from shared.store.inbox import INBOX_RETENTION, forget_expired

    assert post("alpha", "appointment-update", backport(4), HALAXY)[0] == 202
    rt = runtime()
    with write_transaction(rt.engine) as conn:  # a day passes: the record expires, not yet cleaned up
        conn.execute(inbox.update().values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert post("alpha", "appointment-update", backport(4), HALAXY)[0] == 202  # no longer a duplicate
    assert post("alpha", "appointment-update", backport(4), HALAXY) == (200, {"duplicate": True})  # renewed
    with write_transaction(rt.engine) as conn:
        assert forget_expired(conn, datetime.now(UTC)) == 0
        assert forget_expired(conn, datetime.now(UTC) + INBOX_RETENTION + timedelta(seconds=1)) == 1
