"""Azure Storage Queues on Azurite: the adapter, redelivery and poison, and the encoding proof."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.queue import QueueClient

from shared.bootstrap import azurite_connection_string
from shared.queues.azure import AzureQueues
from shared.queues.messages import ChangeMessage, decode, encode
from shared.queues.port import ReceivedMessage, pump_once

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.azurite
def test_producer_encoding_is_what_host_json_tells_the_functions_host(azurite_queue_url: str) -> None:
    """host.json's messageEncoding and the producer agree: the host hands the function our JSON."""
    encoding = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]["messageEncoding"]
    assert encoding == "none"
    queues = AzureQueues.from_connection_string(azurite_connection_string(azurite_queue_url))
    message = ChangeMessage(tenant="north", type="Patient", id="PT-1", action="update")
    queues.send("encoding-proof", encode(message))
    # Read it back as the Functions host does with messageEncoding=none: raw text, no decoding.
    raw = QueueClient.from_connection_string(azurite_connection_string(azurite_queue_url), "encoding-proof")
    (stored,) = list(raw.receive_messages(max_messages=1))
    assert stored.content == encode(message)
    assert decode(stored.content, ChangeMessage) == message


@pytest.mark.azurite
def test_send_receive_delete_count(azurite_queue_url: str) -> None:
    # The age is read on a clock five seconds ahead: no waiting for a real second to pass.
    queues = AzureQueues.from_connection_string(azurite_connection_string(azurite_queue_url),
                                                clock=lambda: datetime.now(UTC) + timedelta(seconds=5))
    for n in range(3):
        queues.send("roundtrip", f'{{"n": {n}}}')
    assert queues.count("roundtrip") == 3
    received = queues.receive("roundtrip", max_messages=2, visibility_timeout=30)
    assert len(received) == 2 and all(m.dequeue_count == 1 for m in received)
    for message in received:
        queues.delete("roundtrip", message)
    assert queues.count("roundtrip") == 1
    age = queues.oldest_age("roundtrip")
    assert age is not None and 4.0 <= age < 35  # the waiting one, enqueued "five seconds ago"
    assert queues.oldest_age("never-used") is None


@pytest.mark.azurite
def test_send_many_sends_each_text_once_and_raises_after_the_rest_are_sent(azurite_queue_url: str) -> None:
    """A notification's messages go at once; one that fails fails the call (the webhook answers
    503 and the sender retries) without stopping the others."""
    queues = AzureQueues.from_connection_string(azurite_connection_string(azurite_queue_url))
    texts = [f'{{"n": {n}}}' for n in range(40)]
    queues.send_many("many", texts)
    got = [m.text for m in queues.receive("many", max_messages=32, visibility_timeout=30)]
    got += [m.text for m in queues.receive("many", max_messages=32, visibility_timeout=30)]
    assert sorted(got) == sorted(texts)
    too_big = "x" * (65 * 1024)  # past the service's 64 KiB message limit
    with pytest.raises(HttpResponseError):
        queues.send_many("many-fails", [*texts[:10], too_big, *texts[10:20]])
    assert queues.count("many-fails") == 20


@pytest.mark.azurite
@pytest.mark.timeout(60)
def test_failing_message_reappears_and_lands_in_poison(azurite_queue_url: str) -> None:
    queues = AzureQueues.from_connection_string(azurite_connection_string(azurite_queue_url))
    queues.send("apply", "always fails")

    def handle(message: ReceivedMessage) -> None:
        raise RuntimeError("cannot apply")

    outcomes = []
    deadline = time.monotonic() + 30
    while queues.count("apply-poison") == 0 and time.monotonic() < deadline:
        # Hidden for 30 s while handled, released for the retry after 0 s (host.json's retry delay).
        outcomes.append(pump_once(queues, "apply", handle, max_dequeue_count=3, visibility_timeout=30,
                                  retry_delay=0))
        time.sleep(0.1)
    assert [o for o in outcomes if o != (0, 0, 0)] == [(0, 1, 0), (0, 1, 0), (0, 0, 1)]
    assert queues.count("apply") == 0
    (poisoned,) = queues.receive("apply-poison", max_messages=5, visibility_timeout=5)
    assert poisoned.text == "always fails"
