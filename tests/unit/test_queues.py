"""Queue messages and the in-memory queue: validation, visibility, redelivery, poison."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.queues.memory import InMemoryQueues
from shared.queues.messages import ChangeMessage, InvalidMessage, ReconcileMessage, decode, encode
from shared.queues.port import ReceivedMessage, poison_name, pump_once
from tests.fakes import ManualClock


def test_change_messages_round_trip_and_stay_small() -> None:
    message = ChangeMessage(tenant="north", type="Appointment", id="AP-1", action="update", version="3",
                            event_key="sub-1:42", received_at=datetime(2026, 1, 1, tzinfo=UTC))
    text = encode(message)
    assert json.loads(text) == {"kind": "change", "tenant": "north", "type": "Appointment", "id": "AP-1",
                                "action": "update", "version": "3", "event_key": "sub-1:42",
                                "received_at": "2026-01-01T00:00:00Z"}
    assert decode(text, ChangeMessage) == message and len(text) < 300
    assert decode(encode(ReconcileMessage(tenant="north", reconcile="full")), ReconcileMessage).run_id is None


@pytest.mark.parametrize("text", [
    "not json", "[]", '{"tenant": "north"}',
    '{"tenant": "North Clinic", "type": "Patient", "id": "PT-1"}',
    '{"tenant": "north", "type": "Observation", "id": "OB-1"}',
    '{"tenant": "north", "type": "Patient", "id": "../etc/passwd"}',
    '{"tenant": "north", "type": "Patient", "id": ".."}',
    '{"tenant": "north", "type": "Patient", "id": "."}',
    '{"tenant": "north", "type": "Patient", "id": "PT-1", "resource": {"name": "x"}}',
    # Times outside what the workers compute with (the calendar's edges overflow a lag or a window).
    '{"tenant": "north", "type": "Patient", "id": "PT-1", "event_at": "0001-01-01T00:00:00+14:00"}',
    '{"tenant": "north", "type": "Patient", "id": "PT-1", "received_at": "9999-12-31T23:59:59Z"}',
])
def test_anything_else_is_an_invalid_message(text: str) -> None:
    with pytest.raises(InvalidMessage, match="not a ChangeMessage"):
        decode(text, ChangeMessage)


def test_a_received_message_is_invisible_until_its_timeout() -> None:
    clock = ManualClock()
    queues = InMemoryQueues(clock)
    queues.send("q", "a")
    (first,) = queues.receive("q", max_messages=5, visibility_timeout=30)
    assert queues.receive("q", max_messages=5, visibility_timeout=30) == []
    clock.now = 31
    (again,) = queues.receive("q", max_messages=5, visibility_timeout=30)
    assert again.id == first.id and again.dequeue_count == 2
    queues.delete("q", first)  # a stale receipt deletes nothing
    assert queues.count("q") == 1
    queues.delete("q", again)
    assert queues.count("q") == 0


def test_delayed_messages_wait() -> None:
    clock = ManualClock()
    queues = InMemoryQueues(clock)
    queues.send("q", "later", delay=10)
    assert queues.receive("q", max_messages=1, visibility_timeout=5) == []
    clock.now = 10
    assert [m.text for m in queues.receive("q", max_messages=1, visibility_timeout=5)] == ["later"]


def test_pump_deletes_handled_retries_failed_and_poisons_after_max_attempts() -> None:
    clock = ManualClock()
    queues = InMemoryQueues(clock)
    for text in ("ok", "bad"):
        queues.send("changes", text)
    handled = []

    def handle(message: ReceivedMessage) -> None:
        if message.text == "bad":
            raise RuntimeError("boom")
        handled.append(message.text)

    results = []
    for _ in range(5):
        results.append(pump_once(queues, "changes", handle, max_dequeue_count=5, visibility_timeout=30))
        clock.now += 31
    assert handled == ["ok"]
    assert results == [(1, 1, 0), (0, 1, 0), (0, 1, 0), (0, 1, 0), (0, 0, 1)]
    assert queues.count("changes") == 0 and queues.count(poison_name("changes")) == 1
    assert [m.text for m in queues.receive("changes-poison", max_messages=5, visibility_timeout=1)] == ["bad"]


def test_a_replay_message_from_the_calendars_edge_is_invalid() -> None:
    with pytest.raises(InvalidMessage, match="not a ReconcileMessage"):
        decode('{"tenant": "north", "reconcile": "incremental", "since": "0001-01-01T00:00:00+14:00"}',
               ReconcileMessage)
