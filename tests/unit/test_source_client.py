"""The FHIR client against httpx.MockTransport, with an injected clock: no network, no waiting."""
from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from shared.settings import TenantConfig
from shared.source.breaker import BreakerPolicy, CircuitBreaker, MemoryBreakerStore
from shared.source.budget import BULK, REALTIME, RateBudget
from shared.source.client import FhirClient, mask_url, window_params
from shared.source.errors import (
    BadResponse,
    CredentialsRefused,
    Gone,
    NotFound,
    Rejected,
    SourceUnavailable,
    TokenError,
)
from shared.source.retry import RetryPolicy, parse_retry_after
from shared.source.tokens import TokenManager, cache_seconds

BASE = "https://au-api.halaxy.example/main"
SECRET = "very-secret-client-secret"
TENANT = TenantConfig(id="north", name="North", fhir_base_url=BASE, client_id="cid", client_secret=SECRET)
EPOCH = 1_767_225_600.0  # wall clock at fake time 0


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Source:
    """A scripted source: token endpoint plus a handler for FHIR requests, with a request log."""

    def __init__(self, fhir: Callable[[httpx.Request], httpx.Response], time: FakeTime, token_delay: float = 0) -> None:
        self.fhir, self.time, self.token_delay = fhir, time, token_delay
        self.log: list[tuple[float, str]] = []
        self.tokens_issued = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.log.append((self.time.now, request.url.path))
        if request.url.path.endswith("/oauth/token"):
            await asyncio.sleep(self.token_delay)
            self.tokens_issued += 1
            return httpx.Response(200, json={"access_token": f"tok-{self.tokens_issued}", "expires_in": 3600})
        assert request.headers["User-Agent"] and request.headers["Authorization"].startswith("Bearer tok-")
        return self.fhir(request)

    def fhir_requests(self) -> list[tuple[float, str]]:
        return [e for e in self.log if not e[1].endswith("/oauth/token")]


def make_client(source: Source, time: FakeTime, **kwargs: Any) -> FhirClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(source))
    tokens = TokenManager(http, user_agent="test-agent", clock=time.clock)
    breaker = kwargs.pop("breaker", CircuitBreaker(BreakerPolicy(failure_threshold=3, cooldown=30), MemoryBreakerStore()))
    return FhirClient(TENANT, http, tokens, breaker, clock=time.clock, wall=time.wall, sleep=time.sleep,
                      rng=random.Random(1), user_agent="test-agent", **kwargs)


def patient(pid: str = "PT-1") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid}


@pytest.mark.asyncio
async def test_single_flight_refresh_one_token_request_for_many_callers() -> None:
    time = FakeTime()
    source = Source(lambda r: httpx.Response(200, json=patient()), time, token_delay=0.01)
    client = make_client(source, time)
    results = await asyncio.gather(*(client.read("Patient", "PT-1") for _ in range(25)))
    assert len(results) == 25 and source.tokens_issued == 1 and client.tokens.fetches == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("expired", [
    httpx.Response(401),
    httpx.Response(403, json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "expired"}]}),
    httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "expired"}]}),
])
async def test_expired_token_is_refreshed_and_retried_once(expired: httpx.Response) -> None:
    time = FakeTime()
    answers = iter([expired, httpx.Response(200, json=patient())])
    source = Source(lambda r: next(answers), time)
    assert (await make_client(source, time).read("Patient", "PT-1"))["id"] == "PT-1"
    assert source.tokens_issued == 2


@pytest.mark.asyncio
async def test_a_refused_fresh_token_is_a_typed_error() -> None:
    time = FakeTime()
    source = Source(lambda r: httpx.Response(401), time)
    with pytest.raises(TokenError, match="tenant north: /main/Patient/PT-1 \\(HTTP 401\\)"):
        await make_client(source, time).read("Patient", "PT-1")
    assert source.tokens_issued == 2  # refreshed once, not more


@pytest.mark.asyncio
async def test_bad_credentials_name_the_tenant_never_the_secret() -> None:
    time = FakeTime()

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "invalid_client"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    with pytest.raises(TokenError) as caught:
        await TokenManager(http, user_agent="t", clock=time.clock).token(TENANT)
    assert "tenant north" in str(caught.value) and "check client_id and client_secret" in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


@pytest.mark.asyncio
async def test_refused_credentials_are_not_presented_again_until_the_hold_passes() -> None:
    time, asked = FakeTime(), []

    async def handler(request: httpx.Request) -> httpx.Response:
        asked.append(time.now)
        if len(asked) < 2:
            return httpx.Response(401, json={"error": "invalid_client"})
        return httpx.Response(200, json={"access_token": "fixed", "expires_in": 900})

    tokens = TokenManager(httpx.AsyncClient(transport=httpx.MockTransport(handler)), user_agent="t",
                          refusal_hold=300, clock=time.clock, wall=time.wall)
    with pytest.raises(CredentialsRefused) as first:
        await tokens.token(TENANT)
    assert first.value.held and first.value.retry_at == EPOCH + 300
    time.now = 299
    with pytest.raises(CredentialsRefused, match=r"invalid_client.*asking again in 1 s") as again:
        await tokens.token(TENANT)
    assert asked == [0] and again.value.retry_at == EPOCH + 300  # no second request to the source
    time.now = 300  # the hold has passed (a fixed secret, say): asked again, and the token is used
    assert await tokens.token(TENANT) == "fixed" and asked == [0, 300]


@pytest.mark.parametrize(("expires_in", "seconds"), [(3600, 840), (900, 840), (300, 240), (None, 840), (30, 5)])
def test_token_cache_life(expires_in: object, seconds: float) -> None:
    assert cache_seconds(expires_in) == seconds


@pytest.mark.asyncio
@pytest.mark.parametrize("header", ["7", "HTTP-DATE"])
async def test_retry_after_is_honoured_no_request_before_it(header: str) -> None:
    time = FakeTime()
    if header == "HTTP-DATE":
        header = format_datetime(datetime.fromtimestamp(EPOCH + 7, UTC), usegmt=True)
    answers = iter([httpx.Response(429, headers={"retry-after": header}), httpx.Response(200, json=patient())])
    source = Source(lambda r: next(answers), time)
    client = make_client(source, time)
    assert (await client.read("Patient", "PT-1", priority=BULK))["id"] == "PT-1"
    (first, _), (second, _) = source.fhir_requests()
    assert first == 0 and second >= 7
    assert client.breaker.store.load(client.breaker_key).failures == 0  # a 429 is not a failure


@pytest.mark.asyncio
@pytest.mark.parametrize(("retry_after", "waits"), [("3", True), ("7", False)])
async def test_real_time_work_waits_briefly_then_is_held_back_with_the_time_to_come_back(
        retry_after: str, waits: bool) -> None:
    """A webhook's re-read waits at most 5 s in the call; longer, it is told when to come back
    (the queue function puts the change back with that delay)."""
    time = FakeTime()
    answers = iter([httpx.Response(429, headers={"retry-after": retry_after}), httpx.Response(200, json=patient())])
    source = Source(lambda r: next(answers), time)
    client = make_client(source, time)
    if waits:
        assert (await client.read("Patient", "PT-1"))["id"] == "PT-1"
        return
    with pytest.raises(SourceUnavailable) as info:
        await client.read("Patient", "PT-1")
    assert info.value.held and info.value.retry_at == pytest.approx(EPOCH + 7, abs=1)
    assert len(source.fhir_requests()) == 1 and time.sleeps == []
    with pytest.raises(SourceUnavailable, match="asked us to wait") as again:  # the gate holds the next one
        await client.read("Patient", "PT-2")
    assert again.value.held and len(source.fhir_requests()) == 1


@pytest.mark.asyncio
async def test_retry_after_holds_back_every_caller_of_the_tenant() -> None:
    time = FakeTime()
    answers = iter([httpx.Response(429, headers={"retry-after": "10"})] + [httpx.Response(200, json=patient())] * 5)
    source = Source(lambda r: next(answers), time)
    client = make_client(source, time)
    await client.read("Patient", "PT-1", priority=BULK)
    assert client.not_before == 10
    time.now = 3  # another caller arrives while the gate is closed
    await client.read("Patient", "PT-1", priority=BULK)
    assert [t for t, _ in source.fhir_requests()] == [0, 10, 10]


class HeldBody(httpx.AsyncByteStream):
    """A body that arrives only when released: meanwhile the client's other requests may run."""

    def __init__(self) -> None:
        self.reading, self.release = asyncio.Event(), asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.reading.set()
        await self.release.wait()
        yield b'{"resourceType": "OperationOutcome"}'


@pytest.mark.asyncio
async def test_a_429_holds_the_other_requests_from_its_headers_not_from_its_body() -> None:
    """Found by the fault matrix's rate-limit-storm: while the 429's body was read, other
    requests passed the gate and reached the source inside the Retry-After it had announced."""
    time, body = FakeTime(), HeldBody()
    answers = iter([httpx.Response(429, headers={"retry-after": "10"}, stream=body)]
                   + [httpx.Response(200, json=patient())] * 2)
    source = Source(lambda r: next(answers), time)
    client = make_client(source, time)
    first = asyncio.create_task(client.read("Patient", "PT-1", priority=BULK))
    await body.reading.wait()
    second = asyncio.create_task(client.read("Patient", "PT-2", priority=BULK))
    for _ in range(20):
        await asyncio.sleep(0)
    body.release.set()
    await asyncio.gather(first, second)
    (refused, _), *later = source.fhir_requests()
    assert refused == 0 and len(later) == 2 and all(at >= 10 for at, _ in later)


class SlowFirstToken:
    """The first caller waits for its token until released; later callers have one at once."""

    def __init__(self) -> None:
        self.release, self.calls = asyncio.Event(), 0

    async def token(self, tenant: TenantConfig) -> str:
        self.calls += 1
        if self.calls == 1:
            await self.release.wait()
        return "tok-1"


@pytest.mark.asyncio
async def test_a_request_that_waited_for_its_token_honours_a_retry_after_met_meanwhile() -> None:
    time, tokens = FakeTime(), SlowFirstToken()
    answers = iter([httpx.Response(429, headers={"retry-after": "7"}), httpx.Response(200, json=patient())])
    source = Source(lambda r: next(answers), time)
    http = httpx.AsyncClient(transport=httpx.MockTransport(source))
    client = FhirClient(TENANT, http, tokens, CircuitBreaker(BreakerPolicy(), MemoryBreakerStore()),  # type: ignore[arg-type]  # a stand-in token manager
                        clock=time.clock, wall=time.wall, sleep=time.sleep, rng=random.Random(1))
    waiting = asyncio.create_task(client.read("Patient", "PT-1", priority=BULK))
    await asyncio.sleep(0)  # past the gate, waiting for its token
    with pytest.raises(SourceUnavailable):  # real-time work is told to come back in 7 s
        await client.read("Patient", "PT-2")
    tokens.release.set()
    assert (await waiting)["id"] == "PT-1"
    assert [at for at, _ in source.fhir_requests()] == [0, 7]


@pytest.mark.asyncio
async def test_5xx_and_transport_errors_retry_with_backoff_then_give_up() -> None:
    time = FakeTime()
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("reset")
        if calls["n"] == 2:
            raise httpx.ReadTimeout("slow")
        return httpx.Response(503) if calls["n"] < 4 else httpx.Response(200, json=patient())

    client = make_client(Source(flaky, time), time, policy=RetryPolicy(max_attempts=5, base_delay=1, max_delay=8),
                         breaker=CircuitBreaker(BreakerPolicy(10), MemoryBreakerStore()))
    assert (await client.read("Patient", "PT-1"))["id"] == "PT-1"
    assert calls["n"] == 4 and len(time.sleeps) == 3
    assert all(0 <= s <= 1 * 2 ** i for i, s in enumerate(time.sleeps))

    time2 = FakeTime()
    failing = make_client(Source(lambda r: httpx.Response(502), time2), time2,
                          policy=RetryPolicy(max_attempts=3), breaker=CircuitBreaker(BreakerPolicy(10), MemoryBreakerStore()))
    with pytest.raises(SourceUnavailable) as caught:
        await failing.read("Patient", "PT-1")
    assert "giving up after 3 attempt(s)" in str(caught.value) and caught.value.status == 502


@pytest.mark.asyncio
@pytest.mark.parametrize(("status", "error"), [(404, NotFound), (410, Gone), (400, Rejected), (403, Rejected)])
async def test_client_errors_are_typed_and_not_retried(status: int, error: type[Exception]) -> None:
    time = FakeTime()
    source = Source(lambda r: httpx.Response(status, json={"resourceType": "OperationOutcome", "issue": []}), time)
    with pytest.raises(error):
        await make_client(source, time).read("Patient", "PT-1")
    assert len(source.fhir_requests()) == 1 and time.sleeps == []


@pytest.mark.asyncio
async def test_breaker_opens_and_lets_exactly_one_probe_through_under_concurrency() -> None:
    time = FakeTime()
    state = {"healthy": False, "in_flight": 0, "max_in_flight": 0}

    async def fhir_async(request: httpx.Request) -> httpx.Response:
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        await asyncio.sleep(0.01)
        state["in_flight"] -= 1
        return httpx.Response(200, json=patient()) if state["healthy"] else httpx.Response(500)

    source = Source(lambda r: httpx.Response(500), time)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return await source(request)
        source.log.append((time.now, request.url.path))
        return await fhir_async(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=3, cooldown=30), MemoryBreakerStore())
    client = FhirClient(TENANT, http, TokenManager(http, user_agent="t", clock=time.clock), breaker,
                        policy=RetryPolicy(max_attempts=1), clock=time.clock, wall=time.wall, sleep=time.sleep)
    for _ in range(3):
        with pytest.raises(SourceUnavailable):
            await client.read("Patient", "PT-1")
    assert client.is_open()
    with pytest.raises(SourceUnavailable, match="circuit open"):
        await client.read("Patient", "PT-1")
    sent = len(source.log)
    time.now += 31
    state["healthy"] = True
    results = await asyncio.gather(*(client.read("Patient", "PT-1") for _ in range(10)), return_exceptions=True)
    assert len(source.log) - sent == 1 + 0  # one probe went out (no new token needed)
    assert sum(isinstance(r, dict) for r in results) == 1
    assert all(isinstance(r, SourceUnavailable) for r in results if not isinstance(r, dict))
    assert not client.is_open()  # the probe succeeded: closed again
    assert (await client.read("Patient", "PT-1"))["id"] == "PT-1"


@pytest.mark.asyncio
@pytest.mark.parametrize(("token_status", "opens"), [(503, True), (429, False)])
async def test_a_failing_token_endpoint_counts_towards_the_breaker(token_status: int, opens: bool) -> None:
    """A source that is down is down at its token endpoint too: without this every run would
    retry a dead source in full. A throttled token endpoint is not a failure."""
    time = FakeTime()
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(token_status)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=3, cooldown=30), MemoryBreakerStore())
    client = FhirClient(TENANT, http, TokenManager(http, user_agent="t", clock=time.clock), breaker,
                        policy=RetryPolicy(max_attempts=3), clock=time.clock, wall=time.wall, sleep=time.sleep)
    with pytest.raises(SourceUnavailable, match="token endpoint"):
        await client.read("Patient", "PT-1")
    assert client.is_open() is opens
    sent = len(calls)
    with pytest.raises(SourceUnavailable, match="circuit open" if opens else "token endpoint"):
        await client.read("Patient", "PT-1")
    assert (len(calls) == sent) is opens  # an open breaker sends nothing at all


def test_breaker_probe_fails_and_reopens() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=2, cooldown=10), MemoryBreakerStore())
    for _ in range(2):
        breaker.record("k", False, 0)
    assert breaker.admit("k", 5) == (False, 10)
    assert breaker.admit("k", 10)[0] is True  # the probe
    assert breaker.admit("k", 10)[0] is False  # nobody else while it runs
    breaker.record("k", False, 11)
    assert breaker.admit("k", 12)[0] is False and breaker.admit("k", 21)[0] is True


def test_full_jitter_bounds() -> None:
    policy, rng = RetryPolicy(base_delay=0.5, max_delay=8), random.Random(7)
    for attempt in range(8):
        ceiling = min(8, 0.5 * 2 ** attempt)
        draws = [policy.backoff(attempt, rng) for _ in range(2000)]
        assert min(draws) >= 0 and max(draws) <= ceiling
        assert 0.4 * ceiling < sum(draws) / len(draws) < 0.6 * ceiling  # uniform: mean near half
    assert policy.delay(3, rng, retry_after=12.0) == 12.0


@pytest.mark.parametrize(("value", "seconds"), [("5", 5.0), (" 0 ", 0.0), ("soon", None), (None, None), ("-3", None)])
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, EPOCH) == seconds


@pytest.mark.asyncio
async def test_pages_stream_and_follow_next_links() -> None:
    time = FakeTime()

    def pages(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        links = [{"relation": "next", "url": f"{BASE}/Patient?page={page + 1}"}] if page < 3 else []
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "total": 6, "link": links,
                                         "entry": [{"resource": patient(f"PT-{page}{i}")} for i in range(2)]})

    source = Source(pages, time)
    client = make_client(source, time)
    stream = client.pages("Patient", {"_count": 2})
    first = await stream.__anext__()
    assert len(source.fhir_requests()) == 1 and len(first["entry"]) == 2  # one page fetched, not all
    ids = [r["id"] async for r in client.resources("Patient", {"_count": 2})]
    assert ids == ["PT-10", "PT-11", "PT-20", "PT-21", "PT-30", "PT-31"]


@pytest.mark.asyncio
async def test_requests_never_leave_the_configured_host() -> None:
    time = FakeTime()
    off_host_next = lambda r: httpx.Response(200, json={
        "resourceType": "Bundle", "link": [{"relation": "next", "url": "https://evil.example/main/Patient?page=2"}]})
    with pytest.raises(BadResponse, match="next link to another host refused"):
        async for _ in make_client(Source(off_host_next, time), time).pages("Patient"):
            pass
    redirect = lambda r: httpx.Response(302, headers={"location": "https://evil.example/steal"})
    with pytest.raises(BadResponse, match="redirect to another host refused"):
        await make_client(Source(redirect, time), time).read("Patient", "PT-1")
    hops = iter([httpx.Response(307, headers={"location": "/main/Patient/PT-2"}), httpx.Response(200, json=patient())])
    assert (await make_client(Source(lambda r: next(hops), time), time).read("Patient", "PT-1"))["id"] == "PT-1"


@pytest.mark.asyncio
async def test_oversized_and_non_json_answers_are_refused() -> None:
    time = FakeTime()
    big = lambda r: httpx.Response(200, content=b'{"resourceType":"Patient","x":"' + b"a" * 5000 + b'"}')
    with pytest.raises(BadResponse, match="larger than 1,024 bytes"):
        await make_client(Source(big, time), time, max_response_bytes=1024).read("Patient", "PT-1")
    html = lambda r: httpx.Response(200, content=b"<html>maintenance</html>")
    with pytest.raises(BadResponse, match="not JSON"):
        await make_client(Source(html, time), time).read("Patient", "PT-1")


def test_budget_keeps_a_reserve_for_realtime_work() -> None:
    time = FakeTime()
    budget = RateBudget(limit=100, window=60, reserve_share=0.2, clock=time.clock)
    budget.observe("100", "21")
    assert budget.take(BULK) == 0  # 21 -> 20
    wait = budget.take(BULK)
    assert wait > 0  # bulk stops at the 20-request reserve
    assert budget.take(REALTIME) == 0  # real-time may spend it
    time.now += wait + 1  # refilled meanwhile
    assert budget.take(BULK) == 0
    time.now += 60  # full again
    budget.observe("0", "0")  # "no limit": ignored, not read as an empty budget
    budget.observe(None, "0")
    assert budget.remaining() == 100 and budget.take(BULK) == 0


def test_budget_forgets_a_limit_the_source_stopped_announcing() -> None:
    time = FakeTime()
    budget = RateBudget(limit=500, window=60, clock=time.clock, forget_after=10)
    budget.observe("30", "0")  # a storm: 30 a minute, none left
    assert budget.take(REALTIME) > 0
    time.now += 9 * 60  # nine windows of silence: still the announced 30
    assert budget.limit == 30
    budget.observe("30", "30")  # announced again: the clock restarts
    time.now += 10 * 60 + 1  # ten windows without a word about the limit
    assert budget.take(REALTIME) == 0
    assert budget.limit == 500 and budget.remaining() == 499


def test_windows_are_half_open_and_end_two_minutes_before_now() -> None:
    from shared.sync.reconcile import incremental_window  # the one the reconcile opens its windows with

    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert incremental_window(now - timedelta(minutes=30), now) == (now - timedelta(minutes=30), now - timedelta(minutes=2))
    assert incremental_window(now - timedelta(minutes=1), now) is None
    params = window_params(now - timedelta(hours=1), now)
    assert params == {"_lastUpdated": ["ge2026-01-01T11:00:00Z", "lt2026-01-01T12:00:00Z"]}


def test_urls_are_masked_for_logs() -> None:
    masked = mask_url("https://user:pw@api.example/main/Patient?access_token=abc123&_count=5&code=xyz")
    assert masked == "https://api.example/main/Patient?access_token=***&_count=5&code=***"


def test_registry_shares_one_client_per_tenant() -> None:
    from shared.source.registry import SourceRegistry

    registry = SourceRegistry(httpx.AsyncClient(), MemoryBreakerStore())
    first = registry.client(TENANT)
    assert registry.client(TENANT) is first  # apply and reconcile share gate, budget, tokens
    other = registry.client(TenantConfig(id="south", name="S", fhir_base_url=BASE, client_id="c", client_secret="s"))
    assert other is not first and other.tokens is first.tokens and other.budget is not first.budget
    changed = TenantConfig(id="north", name="North", fhir_base_url=BASE, client_id="new", client_secret=SECRET)
    assert registry.client(changed) is not first  # configuration changed: a fresh client


@pytest.mark.asyncio
async def test_retry_after_holds_back_other_instances_through_the_shared_store() -> None:
    time = FakeTime()
    store = MemoryBreakerStore()  # what instances share (the database in production)
    answers = iter([httpx.Response(429, headers={"retry-after": "10"})] + [httpx.Response(200, json=patient())] * 5)
    source = Source(lambda r: next(answers), time)
    first = make_client(source, time, breaker=CircuitBreaker(BreakerPolicy(), store))
    other = make_client(source, time, breaker=CircuitBreaker(BreakerPolicy(), store))
    task = asyncio.create_task(first.read("Patient", "PT-1", priority=BULK))
    await asyncio.sleep(0)
    while not source.fhir_requests():
        await asyncio.sleep(0)
    await task
    time.now = 2
    other.not_before = 0  # a fresh instance knows nothing in-process
    await other.read("Patient", "PT-1", priority=BULK)
    assert [t for t, _ in source.fhir_requests()][-1] >= 10


def test_hold_survives_breaker_transitions() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=5), MemoryBreakerStore())
    breaker.hold("k", 100.0)
    breaker.record("k", False, 50.0)  # opens
    assert breaker.gate("k", 60.0) == ("wait", 100.0)
    breaker.record("k", True, 61.0)
    assert breaker.store.load("k").not_before == 100.0
    breaker.hold("k", 90.0)  # an earlier Retry-After does not shorten the wait
    assert breaker.gate("k", 99.0) == ("wait", 100.0) and breaker.gate("k", 100.0) == ("go", 100.0)


@pytest.mark.asyncio
async def test_an_id_that_would_not_read_back_as_itself_is_never_sent() -> None:
    """httpx removes "." and ".." path segments: a re-read of Patient/.. fetched the FHIR base."""
    time = FakeTime()
    source = Source(lambda r: httpx.Response(200, json=patient(r.url.path.rsplit("/", 1)[-1])), time)
    client = make_client(source, time)
    for bad in ("..", ".", "...", "PT 1", "PT/1", ""):
        with pytest.raises(Rejected):
            await client.read("Patient", bad)
    assert source.fhir_requests() == []
    assert (await client.read("Patient", "PT-1.2"))["id"] == "PT-1.2"  # dots inside an id are fine
    assert source.fhir_requests()[-1][1] == "/main/Patient/PT-1.2"
