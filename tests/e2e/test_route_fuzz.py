"""Every route's path and query parameters with the values that broke things before (issue 24):
dates at the calendar's edges, ids of dots, percent-encodings, overlong and odd values — sent as
written (http.client, which does not normalise paths) through the local host. No answer is a 5xx."""
from __future__ import annotations

import http.client
import itertools
import re
from collections.abc import Iterator
from functools import partial
from urllib.parse import quote

import pytest

from devtools.localhost.serve import Booted, boot
from shared.reads.openapi import document
from shared.settings import load_settings

pytestmark = pytest.mark.slow  # every route's parameters x edge values, on both databases

VALUES = ["0001-01-01", "9999-12-31", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "1899-12-31",
          "2026-02-30", "..", ".", "%2e%2e", "%2E", "a%2Fb", "%00", "%ff", "x" * 3000, "-1", "0", "1e309", "NaN",
          "2026-01-01T00:00:00Z", "demo", "PR-1000000", "Patient,Invoice", "%E2%80%AE", "é", "' OR 1=1 --"]


def _fill(values: dict[str, str], match: re.Match[str]) -> str:
    return values[match.group(1)]


@pytest.fixture
def booted(database_url: str) -> Iterator[Booted]:
    running = boot(load_settings(database_url=database_url, fanout_schedule="0 0 0 1 1 *", LOCAL_FUNCTION_KEY=""),
                   port=0, say=lambda line: None, demo_counts=(2, 10, 20, 10))
    yield running
    running.stop()


def requests() -> Iterator[tuple[str, str]]:
    """(method, raw path with query) for every operation, each parameter given each value."""
    for template, operations in document()["paths"].items():
        for method, op in operations.items():
            params = op.get("parameters", [])
            path_names = [p["name"] for p in params if p["in"] == "path"]
            query_names = [p["name"] for p in params if p["in"] == "query"]
            base = {name: ("demo" if name == "tenant" else "x") for name in path_names}
            for name, value in itertools.product(path_names + query_names, VALUES):
                encoded = value if "%" in value else quote(value, safe="")
                path_values = {**base, **({name: encoded} if name in path_names else {})}
                path = "/api" + re.sub(r"\{(\w+)\}", partial(_fill, path_values), template)
                query = f"?{name}={encoded}" if name in query_names else ""
                yield method.upper(), path + query
            if not params:
                yield method.upper(), "/api" + template


def test_no_route_answers_5xx_to_edge_values(booted: Booted) -> None:
    sent, server_errors = 0, []
    for method, target in requests():
        conn = http.client.HTTPConnection("127.0.0.1", booted.host.port, timeout=30)
        body = b'{"kind": "full"}' if method == "POST" else None
        conn.putrequest(method, target, skip_accept_encoding=True)
        if body is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        status = conn.getresponse().status
        conn.close()
        sent += 1
        if status >= 500:
            server_errors.append((method, target[:120], status))
    assert sent > 300 and server_errors == [], server_errors
