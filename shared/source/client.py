"""FhirClient: a tenant's FHIR R4 source, read safely.

Every request goes through one method (``_get``): the tenant's Retry-After gate, the circuit
breaker, the shared rate budget, a token, then the response classified into data or one of
shared.source.errors. Only 429, 5xx, timeouts and connection errors are retried, with full
jitter; 401 or an ``expired`` OperationOutcome refreshes the token once. Pages are streamed
(an async generator following Bundle.link[next]); nothing loads a whole result set.
Requests never leave the configured host: redirects and next links elsewhere are refused.

Two clocks: ``clock`` (monotonic) for waits inside this process, ``wall`` (epoch seconds) for
the breaker and every ``retry_at`` — those are shared with other instances through the database.
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx
from pydantic_core import from_json

from shared.records import is_fhir_id
from shared.settings import TenantConfig
from shared.source.breaker import CircuitBreaker
from shared.source.budget import BULK, REALTIME, RateBudget
from shared.source.errors import (
    BadResponse,
    Gone,
    NotFound,
    Rejected,
    SourceUnavailable,
    TokenError,
    TransientError,
)
from shared.source.retry import DEFAULT_RETRY, RetryPolicy, is_retryable_status, parse_retry_after
from shared.source.tokens import TokenManager

log = logging.getLogger("shared.source")
MAX_REDIRECTS = 3
_SECRET_QUERY = re.compile(r"((?:access_)?token|secret|code|password|key)=([^&]+)", re.I)


def mask_url(url: str) -> str:
    """A URL fit for a log line: no userinfo, no token-like query values."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    query = _SECRET_QUERY.sub(lambda m: f"{m.group(1)}=***", parts.query)
    return f"{parts.scheme}://{host}{port}{parts.path}" + (f"?{query}" if query else "")


def window_params(start: datetime, end: datetime) -> dict[str, list[str]]:
    def fmt(t: datetime) -> str:
        return t.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {"_lastUpdated": [f"ge{fmt(start)}", f"lt{fmt(end)}"]}


def _expired_outcome(body: Any) -> bool:
    return (isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"
            and any(isinstance(i, dict) and i.get("code") == "expired" for i in body.get("issue", [])))


def breaker_key(tenant: TenantConfig) -> str:
    """One breaker per tenant and source host (``source_health.breaker_key``)."""
    return f"{tenant.id}|{urlsplit(tenant.fhir_url).netloc}"


class FhirClient:
    def __init__(self, tenant: TenantConfig, http: httpx.AsyncClient, tokens: TokenManager, breaker: CircuitBreaker,
                 *, budget: RateBudget | None = None, policy: RetryPolicy = DEFAULT_RETRY,
                 user_agent: str = "fhir-mirror/0.1", max_response_bytes: int = 32 << 20,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, rng: random.Random | None = None) -> None:
        self.tenant, self.http, self.tokens, self.breaker = tenant, http, tokens, breaker
        self.budget = budget or RateBudget(clock=clock)
        self.policy, self.user_agent, self.max_response_bytes = policy, user_agent, max_response_bytes
        self.clock, self.wall, self.sleep, self.rng = clock, wall, sleep, rng or random.Random()
        self.base = tenant.fhir_url
        base = urlsplit(self.base)
        self._origin = (base.scheme, base.netloc)
        self.breaker_key = breaker_key(tenant)
        self.not_before = 0.0  # no request to this source before then (a Retry-After)
        self.requests = 0

    # -- public -----------------------------------------------------------------------------
    async def read(self, resource_type: str, resource_id: str, *, priority: str = REALTIME) -> dict[str, Any]:
        """The current resource; raises NotFound (404) or Gone (410). The id goes into the path
        percent-encoded, and one that would not read back as itself ("..") is never sent."""
        if not is_fhir_id(resource_id):
            raise Rejected(self.tenant.id, "not a FHIR id: not read", path=f"/{resource_type}")
        body = await self._get(f"{self.base}/{resource_type}/{quote(resource_id, safe='')}", None, priority)
        if not isinstance(body, dict) or body.get("resourceType") != resource_type:
            raise BadResponse(self.tenant.id, "not the resource asked for", path=f"/{resource_type}/{resource_id}")
        return body

    async def pages(self, resource_type: str, params: dict[str, Any] | None = None, *,
                    priority: str = BULK, start_url: str | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """Search pages (Bundles) one at a time, following Bundle.link[relation=next];
        ``start_url`` resumes at a next link saved in a checkpoint."""
        url: str | None = f"{self.base}/{resource_type}"
        query: dict[str, Any] | None = params
        if start_url is not None:
            self._require_same_origin(start_url, "resume link")
            url, query = start_url, None
        while url:
            bundle = await self._get(url, query, priority)
            if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
                raise BadResponse(self.tenant.id, "search did not answer a Bundle", path=f"/{resource_type}")
            yield bundle
            url = next((link.get("url") for link in bundle.get("link", [])
                        if isinstance(link, dict) and link.get("relation") == "next"), None)
            query = None  # the next link carries the query
            if url is not None:
                self._require_same_origin(url, "next link")

    async def resources(self, resource_type: str, params: dict[str, Any] | None = None, *,
                        priority: str = BULK) -> AsyncIterator[dict[str, Any]]:
        async for bundle in self.pages(resource_type, params, priority=priority):
            for entry in bundle.get("entry", []):
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict) and resource.get("resourceType") == resource_type:
                    yield resource

    async def changed(self, resource_type: str, start: datetime, end: datetime, *, count: int = 100,
                      priority: str = BULK) -> AsyncIterator[dict[str, Any]]:
        """Everything of a type last updated in [start, end)."""
        params = {**window_params(start, end), "_count": count}
        async for resource in self.resources(resource_type, params, priority=priority):
            yield resource

    def is_open(self) -> bool:
        """True while the breaker would refuse: the engine skips this tenant's work early."""
        return self.breaker.is_open(self.breaker_key, self.wall())

    # -- the one request path ---------------------------------------------------------------
    async def _get(self, url: str, params: dict[str, Any] | None, priority: str) -> Any:
        path = urlsplit(url).path
        attempt, refreshed = 0, False
        while True:
            await self._wait_for_gates(priority, path)
            try:
                token = await self.tokens.token(self.tenant)
                # A Retry-After that another request met while this one waited for its token holds it too.
                await self._wait_for_hold(priority, path)
                response, body, retry_after = await self._send(url, params, token, path)
            except SourceUnavailable:
                raise  # held back before sending: nothing failed
            except TokenError as exc:
                if not exc.retryable:
                    raise
                # The token endpoint down is the source down (same host): it counts towards the
                # breaker, or a dead source would be retried in full by every run.
                if exc.status != 429:
                    self.breaker.record(self.breaker_key, False, self.wall())
                failure: TransientError = exc  # type: ignore[assignment]  # retried like one
                retry_after = None
            except TransientError as exc:
                self.breaker.record(self.breaker_key, False, self.wall())
                failure, retry_after = exc, None
            else:
                status = response.status_code
                if (status == 401 or _expired_outcome(body)) and not refreshed:
                    self.tokens.invalidate(self.tenant.id, token)
                    refreshed = True
                    continue
                if status == 401 or _expired_outcome(body):
                    raise TokenError(self.tenant.id, "a fresh token was refused too", path=path, status=status)
                if not is_retryable_status(status):
                    self.breaker.record(self.breaker_key, True, self.wall())
                    return self._classify(status, body, path)
                if status != 429:  # a throttle is the source being careful, not failing
                    self.breaker.record(self.breaker_key, False, self.wall())
                failure = TransientError(self.tenant.id, "source busy or failing", path=path, status=status)
            attempt += 1
            delay = self.policy.delay(attempt - 1, self.rng, retry_after)
            if retry_after is not None:  # this process holds already (_send); now every instance
                self.breaker.hold(self.breaker_key, self.wall() + retry_after)
            if attempt >= self.policy.max_attempts or delay > self.policy.wait_limit(priority):
                raise SourceUnavailable(self.tenant.id, f"giving up after {attempt} attempt(s): {failure}",
                                        path=path, status=failure.status, retry_at=self.wall() + delay,
                                        unreachable=failure.unreachable,
                                        held=failure.status == 429 or retry_after is not None)
            log.info("tenant=%s path=%s retry=%d delay=%.2fs status=%s", self.tenant.id, path, attempt, delay,
                     failure.status)
            await self.sleep(delay)

    async def _wait_for_gates(self, priority: str, path: str) -> None:
        while True:
            await self._wait_for_hold(priority, path)
            verdict, until = self.breaker.gate(self.breaker_key, self.wall())
            if verdict == "open":
                raise SourceUnavailable(self.tenant.id, "circuit open: the source failed repeatedly", path=path,
                                        retry_at=until, held=True)
            if verdict == "wait":  # a hold recorded since the line above
                continue
            wait = self.budget.take(priority)
            if wait <= 0:
                return
            self._check_wait(wait, priority, path)
            await self.sleep(wait)

    async def _wait_for_hold(self, priority: str, path: str) -> None:
        """Sleep out a Retry-After, as this process saw it or as any instance recorded it."""
        while (wait := max(self.not_before - self.clock(),
                           self.breaker.held_until(self.breaker_key) - self.wall())) > 0:
            self._check_wait(wait, priority, path)
            await self.sleep(wait)

    def _check_wait(self, wait: float, priority: str, path: str) -> None:
        if wait > self.policy.wait_limit(priority):
            raise SourceUnavailable(self.tenant.id, "source asked us to wait", path=path,
                                    retry_at=self.wall() + wait, held=True)

    async def _send(self, url: str, params: dict[str, Any] | None, token: str,
                    path: str) -> tuple[httpx.Response, Any, float | None]:
        """The answer, its JSON, and its Retry-After in seconds (busy or failing answers only)."""
        headers = {"Authorization": f"Bearer {token}", "User-Agent": self.user_agent,
                   "Accept": "application/fhir+json"}
        for _ in range(MAX_REDIRECTS + 1):
            self.requests += 1
            started = self.clock()
            try:
                request = self.http.build_request("GET", url, params=params, headers=headers)
                response = await self.http.send(request, stream=True, follow_redirects=False)
            except httpx.TimeoutException:
                raise TransientError(self.tenant.id, "timed out", path=path) from None
            except httpx.TransportError as exc:
                raise TransientError(self.tenant.id, f"connection failed ({exc.__class__.__name__})", path=path,
                                     unreachable=isinstance(exc, httpx.ConnectError)) from None
            retry_after = (parse_retry_after(response.headers.get("retry-after"), self.wall())
                           if is_retryable_status(response.status_code) else None)
            if retry_after is not None:
                # Hold this process's other requests now, not after the body: reading it lets them run.
                self.not_before = max(self.not_before, self.clock() + retry_after)
            try:
                if response.is_redirect:
                    url = urljoin(str(request.url), response.headers.get("location", ""))
                    self._require_same_origin(url, "redirect")
                    params = None
                    continue
                raw = await self._read_capped(response, path)
            finally:
                await response.aclose()
            self.budget.observe(response.headers.get("x-ratelimit-limit"), response.headers.get("x-ratelimit-remaining"))
            log.debug("tenant=%s GET %s -> %s in %.0f ms", self.tenant.id, mask_url(str(request.url)),
                      response.status_code, (self.clock() - started) * 1000)
            return response, self._json(raw, response, path), retry_after
        raise BadResponse(self.tenant.id, f"more than {MAX_REDIRECTS} redirects", path=path)

    async def _read_capped(self, response: httpx.Response, path: str) -> bytes:
        chunks, size = [], 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise BadResponse(self.tenant.id, f"response larger than {self.max_response_bytes:,} bytes",
                                      path=path, status=response.status_code)
                chunks.append(chunk)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise TransientError(self.tenant.id, f"connection failed mid-response ({exc.__class__.__name__})",
                                 path=path) from None
        return b"".join(chunks)

    def _json(self, raw: bytes, response: httpx.Response, path: str) -> Any:
        if not raw:
            return None
        try:
            # pydantic-core's Rust parser: the same Python objects as json.loads, ~25% faster on
            # search pages (a reconcile spends a sixth of its time decoding them).
            return from_json(raw)
        except ValueError:
            if response.status_code >= 400:
                return None  # an HTML error page from a proxy: the status says enough
            raise BadResponse(self.tenant.id, "answer is not JSON", path=path, status=response.status_code) from None

    def _require_same_origin(self, url: str, what: str) -> None:
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) != self._origin:
            raise BadResponse(self.tenant.id, f"{what} to another host refused ({parts.netloc or 'no host'})")

    def _classify(self, status: int, body: Any, path: str) -> Any:
        if 200 <= status < 300:
            return body
        if status == 404:
            raise NotFound(self.tenant.id, "not found at the source", path=path, status=status)
        if status == 410:
            raise Gone(self.tenant.id, "deleted at the source", path=path, status=status)
        raise Rejected(self.tenant.id, "the source rejected the request", path=path, status=status)
