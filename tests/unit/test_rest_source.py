"""RestSource against scripted answers (httpx.MockTransport): what it sends for each auth kind
and filter, how it pages, and what an answer of the wrong shape does."""
from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from shared.rest.source import RestSource
from shared.settings import TenantConfig, parse_tenants
from shared.source.breaker import DEFAULT_BREAKER, CircuitBreaker, MemoryBreakerStore
from shared.source.budget import RateBudget
from shared.source.errors import BadResponse, CredentialsRefused
from shared.source.protocol import Page, Unreadable, Window
from shared.source.tokens import TokenManager

START = datetime(2026, 11, 30, 8, 15, 0, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)


def tenant(**fields: Any) -> TenantConfig:
    (t,) = parse_tenants(json.dumps([{"id": "t", "name": "T", "source": "rest", **fields}]), source="test")
    return t


def source(t: TenantConfig, answer: Callable[[httpx.Request], httpx.Response]) -> tuple[RestSource, list[httpx.Request]]:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answer(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    rest = RestSource(t, http, TokenManager(http, user_agent="test"), CircuitBreaker(DEFAULT_BREAKER, MemoryBreakerStore()),
                      budget=RateBudget(limit=10**6))
    return rest, sent


def pages(rest: RestSource, entity: str, window: Window | None, page_size: int = 2) -> list[Page]:
    async def go() -> list[Page]:
        return [page async for page in rest.listing(entity, window, resume=None, page_size=page_size)]
    return asyncio.run(go())


def test_cliniko_sends_basic_auth_with_the_key_and_a_closed_window_in_repeated_q() -> None:
    t = tenant(spec="cliniko", base_url="http://cliniko.test/v1", username="the-key")

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("page") == "2":
            return httpx.Response(200, json={"patients": [{"id": 3, "updated_at": "2026-11-30T10:00:00Z"}],
                                             "total_entries": 3, "links": {}})
        return httpx.Response(200, json={"patients": [{"id": 1, "updated_at": "2026-11-30T09:00:00Z"},
                                                      {"id": 2, "updated_at": "2026-11-30T09:30:00Z"}],
                                         "total_entries": 3,
                                         "links": {"next": "http://cliniko.test/v1/patients?page=2&per_page=2"}})
    rest, sent = source(t, answer)
    got = pages(rest, "patients", Window(START, END))
    assert [p.total for p in got] == [3, 3] and got[-1].resume is None
    first = sent[0]
    assert first.headers["authorization"] == "Basic " + base64.b64encode(b"the-key:").decode()
    assert parse_qsl(first.url.query.decode()) == [
        ("sort", "updated_at"), ("per_page", "2"), ("q[]", "updated_at:>=2026-11-30T08:13:00Z"),
        ("q[]", "updated_at:<2026-12-01T00:00:00Z")]  # since less the 2-minute overlap
    assert str(sent[1].url) == "http://cliniko.test/v1/patients?page=2&per_page=2"
    assert [r.source_id for p in got for r in p.map().rows] == ["1", "2", "3"]


def test_hie_gets_a_token_with_basic_credentials_and_the_grant_in_the_query(tmp_path: Path) -> None:
    t = tenant(spec="hie-facilities", base_url="http://hie.test", token_url="http://auth.test/oauth2/token",
               client_id="id", client_secret="secret")

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            ok = (request.url.params.get("grant_type") == "client_credentials" and request.content == b""
                  and request.headers["authorization"] == "Basic " + base64.b64encode(b"id:secret").decode())
            return httpx.Response(200 if ok else 401, json={"access_token": "tok", "expires_in": 3600} if ok else {})
        assert request.headers["authorization"] == "Bearer tok"
        return httpx.Response(200, json=[{"id": "f1", "lastUpdated": "2026-11-30 09:00:00"}])
    rest, sent = source(t, answer)
    got = pages(rest, "facilities", Window(START, END))
    assert sent[1].url.params["lastUpdated"] == "2026-11-30 08:13:00"  # HIE's own format, no upper bound
    assert [r.source_id for r in got[0].map().rows] == ["f1"]  # a bare list is accepted too


def test_ppb_posts_its_credentials_in_the_body_and_pages_from_zero() -> None:
    t = tenant(spec="ppb-premises", base_url="http://ppb.test", username="me@ppb", password="pw")

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert (request.method, body) == ("POST", {"useremail": "me@ppb", "userpassword": "pw"})
        page = int(request.url.params["page"])
        return httpx.Response(200, json={"_embedded": {"vwApiCurrentPremiseList": [{"premiseid": 10 + page}]},
                                         "page": {"totalPages": 2, "totalElements": 2}})
    rest, sent = source(t, answer)
    got = pages(rest, "premises", None, page_size=1)
    assert [r.url.params["page"] for r in sent] == ["0", "1"]
    rows = [r for p in got for r in p.map().rows]
    assert [(r.source_id, r.observed) for r in rows] == [("10", True), ("11", True)]
    with pytest.raises(Unreadable):
        asyncio.run(rest.fetch("premises", "10"))


def test_pems_sends_its_key_and_organization_and_follows_the_cursor() -> None:
    t = tenant(spec="pems", base_url="http://pems.test", api_key="k", variables={"organization": "org 7"})

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer k"
        if request.url.path.endswith("/r-1"):
            return httpx.Response(404, json={})
        cursor = request.url.params.get("cursor")
        return httpx.Response(200, json={"data": [{"id": f"r-{cursor or 0}", "updatedAt": "2026-11-30T09:00:00Z"}],
                                         "meta": {"nextCursor": None if cursor else "c1"}})
    rest, sent = source(t, answer)
    got = pages(rest, "pfa_records", None)
    assert sent[0].url.raw_path.startswith(b"/api/v1/organizations/org%207/pfa-records?")  # encoded in a path
    assert [r.url.params.get("cursor") for r in sent] == [None, "c1"] and got[0].resume == {"cursor": "c1"}
    assert asyncio.run(rest.fetch("pfa_records", "r-1")) is None  # gone at the source


def test_an_answer_without_records_where_the_spec_says_fails_naming_the_path() -> None:
    t = tenant(spec="ppb-premises", base_url="http://ppb.test", username="u", password="p")
    rest, _sent = source(t, lambda r: httpx.Response(200, json={"_embedded": {"somethingElse": []}}))
    with pytest.raises(BadResponse) as caught:
        pages(rest, "premises", None)
    message = str(caught.value)
    assert "'_embedded.vwApiCurrentPremiseList'" in message and "nothing from this page was written" in message
    assert message.startswith("tenant t: /catalogue-0.0.1/view/premisecatalogue: premises: unexpected answer")


def test_refused_static_credentials_hold_the_tenant_instead_of_failing_towards_poison() -> None:
    t = tenant(spec="cliniko", base_url="http://cliniko.test/v1", username="wrong")
    rest, sent = source(t, lambda r: httpx.Response(401, json={"message": "You must be logged in"}))
    with pytest.raises(CredentialsRefused) as caught:
        pages(rest, "patients", None)
    assert caught.value.held and len(sent) == 1 and "wrong" not in str(caught.value)


def test_a_next_link_to_another_host_is_refused() -> None:
    t = tenant(spec="cliniko", base_url="http://cliniko.test/v1", username="k")
    rest, sent = source(t, lambda r: httpx.Response(200, json={
        "patients": [{"id": 1, "updated_at": "2026-11-30T09:00:00Z"}] * 2, "links": {"next": "http://evil.test/v1/p"}}))
    with pytest.raises(BadResponse, match="next link to another host refused"):
        pages(rest, "patients", None)
    assert len(sent) == 1
