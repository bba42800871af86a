"""The local host as a server an attacker can reach (issue 24, rows 5, 6, 8, 9): it refuses before
it reads, closes what goes silent, frames requests one way, and keeps its admin API behind the key.

The function app here is the real one; requests are written by hand on raw sockets, since an HTTP
client library would not send what these tests need (duplicate headers, short bodies, silence)."""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from devtools.localhost.host import LocalHost
from function_app import app
from shared.queues.memory import InMemoryQueues
from shared.settings import load_settings

KEY = "local-key"


@pytest.fixture
def host(sqlite_url: str) -> Iterator[LocalHost]:
    settings = load_settings(database_url=sqlite_url, LOCAL_FUNCTION_KEY=KEY, fanout_schedule="0 0 0 1 1 *")
    running = LocalHost(app, settings, InMemoryQueues(), port=0, idle_timeout=1.0).start()
    yield running
    running.stop()


def exchange(host: LocalHost, head: str, body: bytes = b"", *, half_close: bool = False) -> tuple[int, bytes]:
    """Send a raw request (``head`` without its blank line) and read the answer until the server
    closes; returns (status, whole answer)."""
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b"Connection: close" not in answer and _complete(answer):
                break
    return int(answer.split(b" ", 2)[1]), answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    return len(body) >= length


def test_a_huge_body_is_refused_before_it_is_read(host: LocalHost) -> None:
    """20 connections announce 16 MiB each and send none of it: each is answered at once."""
    started = time.monotonic()
    for path, expected in (("/api/tenants/demo/sync", 401), ("/api/nowhere", 404),
                           ("/api/webhooks/demo/appointment-update", 413)):
        for _ in range(20 if path != "/api/webhooks/demo/appointment-update" else 2):
            status, answer = exchange(host, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216")
            assert status == expected, answer
            assert b"Connection: close" in answer  # the unread body is not drained
    assert time.monotonic() - started < 30  # answered without waiting for bodies that never came


def test_a_body_shorter_than_announced_then_a_half_close_is_not_processed(host: LocalHost) -> None:
    status, answer = exchange(host, "POST /api/tenants/demo/sync?code=local-key HTTP/1.1\r\nHost: x\r\n"
                                    "Content-Type: application/json\r\nContent-Length: 40", b'{"kind": "full"}',
                              half_close=True)
    assert status == 400 and b"incomplete-body" in answer
    assert host.queues.count("reconcile") == 0


def test_a_silent_connection_is_closed(host: LocalHost) -> None:
    with socket.create_connection(("127.0.0.1", host.port), timeout=10) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\n")  # and never the rest
        assert sock.recv(65536) == b""  # closed by the server after its idle timeout (1 s here)


def test_a_client_that_hangs_up_leaves_no_traceback(host: LocalHost, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="devtools.localhost"):
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", host.port), timeout=10)
            sock.sendall(b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # a reset before the answer is written
        assert exchange(host, "GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close")[0] in (200, 503)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(("head", "expected"), [
    ("POST /api/webhooks/demo/appointment-update HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2",
     (400, b"ambiguous-framing")),
    (("POST /api/webhooks/demo/appointment-update HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
     "Transfer-Encoding: chunked"), (400, b"ambiguous-framing")),
    ("POST /api/webhooks/demo/appointment-update HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked",
     (411, b"length-required")),
    ("GET /api/tenants/demo/sync/runs HTTP/1.1\r\nHost: x\r\nx-functions-key: local-key\r\nx-functions-key: other",
     (400, b'"duplicate-header", "header": "x-functions-key"')),
    (("POST /api/webhooks/demo/appointment-update HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: a\r\n"
     "X-Webhook-Secret: b\r\nContent-Length: 2"), (400, b'"header": "x-webhook-secret"')),
    ("POST /api/webhooks/demo/appointment-update HTTP/1.1\r\nHost: x\r\nContent-Length: -1",
     (400, b"bad-content-length")),
])
def test_one_framing_rule_and_no_ambiguous_headers(host: LocalHost, head: str, expected: tuple[int, bytes]) -> None:
    status, answer = exchange(host, head, b"{}")
    assert status == expected[0] and expected[1] in answer, answer


def test_the_admin_api_needs_the_key_and_no_answer_names_python(host: LocalHost) -> None:
    status, answer = exchange(host, "GET /admin/host/status HTTP/1.1\r\nHost: x\r\nConnection: close")
    assert status == 401 and b"function-key-required" in answer and b"queues" not in answer
    status, answer = exchange(host, "GET /admin/host/status HTTP/1.1\r\nHost: x\r\nx-functions-key: local-key\r\n"
                                    "Connection: close")
    assert status == 200 and b'"queues"' in answer
    assert b"Python" not in answer and b"BaseHTTP" not in answer
