"""Azurite, the real storage emulator, is installed and started by `make test` for queue tests."""
from __future__ import annotations

import json

import pytest
from azure.storage.queue import QueueClient

# Azurite's published development account (not a secret): the well-known emulator key.
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.mark.azurite
def test_a_json_message_round_trips_through_azurite(azurite_queue_url: str) -> None:
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_ACCOUNT_KEY};"
            f"QueueEndpoint={azurite_queue_url};")
    queue = QueueClient.from_connection_string(conn, "smoke")
    queue.create_queue()
    body = json.dumps({"tenant": "demo", "type": "Patient", "id": "PT-1"})
    queue.send_message(body)
    (message,) = queue.receive_messages(max_messages=1, visibility_timeout=5)
    assert json.loads(message.content) == {"tenant": "demo", "type": "Patient", "id": "PT-1"}
    queue.delete_message(message)
    assert queue.get_queue_properties().approximate_message_count == 0
