"""TokenManager: OAuth2 client-credentials tokens per tenant, cached and refreshed single-flight.

Halaxy's tokens live 15 minutes whatever ``expires_in`` says, so a token is cached for
``min(expires_in, 900) - 60`` seconds. Concurrent callers that find no valid token wait for one
refresh (a per-tenant lock) and re-check the cache after taking it. A caller whose token was
refused invalidates exactly that token, so a fresh one fetched meanwhile is kept. Credentials the
token endpoint refuses are not presented again for ``refusal_hold`` seconds (CredentialsRefused,
with when to come back): queue work is put back until then instead of failing towards poison.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from shared.rest.spec import OAuth2ClientCredentials
from shared.settings import TenantConfig
from shared.source.errors import CredentialsRefused, TokenError, TransientError
from shared.telemetry import telemetry

MAX_TOKEN_LIFE = 900.0
REFRESH_MARGIN = 60.0
MIN_CACHE = 5.0


class TokenUnavailable(TokenError, TransientError):
    """The token endpoint failed in a way worth retrying (5xx, timeout, connection)."""


@dataclass(frozen=True)
class CachedToken:
    value: str
    expires_at: float


def token_url(tenant: TenantConfig) -> str:
    return tenant.fhir_url + "/oauth/token"


@dataclass(frozen=True)
class TokenRequest:
    """How a tenant asks for a token: Halaxy's form post, or what a REST spec's OAuth2 says."""

    url: str
    params: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] | None = None
    basic: tuple[str, str] | None = None
    max_life: float = MAX_TOKEN_LIFE
    label: str | None = None  # how errors name the endpoint (default: the URL's path)

    @property
    def path(self) -> str:
        return self.label or urlsplit(self.url).path or "/"


def token_request(tenant: TenantConfig) -> TokenRequest:
    client_id, secret = tenant.credential("client_id"), tenant.credential("client_secret")
    if tenant.is_fhir:
        return TokenRequest(token_url(tenant), form={"grant_type": "client_credentials", "client_id": client_id,
                                                      "client_secret": secret}, label="/oauth/token")
    auth = tenant.rest_spec().auth
    if not isinstance(auth, OAuth2ClientCredentials):
        raise TypeError(f"tenant {tenant.id}: its spec's auth ({auth.kind}) uses no token")
    grant = {"grant_type": "client_credentials", **({"scope": auth.scope} if auth.scope else {})}
    form = {**({} if auth.grant_type_in == "query" else grant),
            **({"client_id": client_id, "client_secret": secret} if auth.credentials == "body" else {})}
    return TokenRequest(str(tenant.token_url or auth.token_url), params=grant if auth.grant_type_in == "query" else {},
                        form=form or None, basic=(client_id, secret) if auth.credentials == "basic" else None,
                        max_life=auth.max_token_life)


def cache_seconds(expires_in: object, max_life: float = MAX_TOKEN_LIFE) -> float:
    life = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else max_life
    return max(min(life, max_life) - REFRESH_MARGIN, MIN_CACHE)


class TokenManager:
    def __init__(self, http: httpx.AsyncClient, *, user_agent: str, refusal_hold: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.http, self.user_agent, self.clock, self.wall = http, user_agent, clock, wall
        self.refusal_hold = refusal_hold
        self._cache: dict[str, CachedToken] = {}
        self._refused: dict[str, tuple[float, str, str | None]] = {}  # tenant → (asked again after, why, path)
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetches = 0  # token requests sent: for tests and telemetry

    def _valid(self, tenant_id: str) -> str | None:
        cached = self._cache.get(tenant_id)
        return cached.value if cached and self.clock() < cached.expires_at else None

    async def token(self, tenant: TenantConfig) -> str:
        value = self._valid(tenant.id)
        if value:
            return value
        lock = self._locks.setdefault(tenant.id, asyncio.Lock())
        async with lock:
            value = self._valid(tenant.id)  # someone refreshed while we waited
            if value:
                return value
            self._still_refused(tenant.id)
            try:
                value, seconds = await self._fetch(tenant)
            except CredentialsRefused as exc:
                self._refused[tenant.id] = (self.clock() + self.refusal_hold, exc.detail, exc.path)
                telemetry().token_failure(tenant.id, "refused")
                raise
            except TokenUnavailable:
                telemetry().token_failure(tenant.id, "unavailable")
                raise
            self._refused.pop(tenant.id, None)
            self._cache[tenant.id] = CachedToken(value, self.clock() + seconds)
            return value

    def _still_refused(self, tenant_id: str) -> None:
        """Credentials refused a moment ago are not tried again until the hold passes: a wrong
        secret stays wrong, and a source may lock out a client that keeps presenting it."""
        refused = self._refused.get(tenant_id)
        if refused is None:
            return
        until, why, path = refused
        left = until - self.clock()
        if left > 0:
            raise CredentialsRefused(tenant_id, f"{why} (refused earlier; asking again in {left:.0f} s)",
                                     path=path, retry_at=self.wall() + left)

    def invalidate(self, tenant_id: str, value: str) -> None:
        cached = self._cache.get(tenant_id)
        if cached is not None and cached.value == value:
            del self._cache[tenant_id]

    async def _fetch(self, tenant: TenantConfig) -> tuple[str, float]:
        self.fetches += 1
        ask = token_request(tenant)
        path = ask.path
        try:
            auth = httpx.BasicAuth(*ask.basic) if ask.basic else httpx.USE_CLIENT_DEFAULT
            response = await self.http.post(ask.url, params=ask.params, data=ask.form, auth=auth, headers={
                "User-Agent": self.user_agent, "Accept": "application/json"}, follow_redirects=False)
        except httpx.TimeoutException:
            raise TokenUnavailable(tenant.id, "token endpoint timed out", path=path) from None
        except httpx.TransportError as exc:
            raise TokenUnavailable(tenant.id, f"token endpoint unreachable ({exc.__class__.__name__})",
                                   path=path, unreachable=isinstance(exc, httpx.ConnectError)) from None
        status = response.status_code
        if status >= 500 or status == 429:
            raise TokenUnavailable(tenant.id, "token endpoint failed; will retry", path=path, status=status)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if status != 200 or not isinstance(payload, dict) or not isinstance(payload.get("access_token"), str):
            reason = payload.get("error") if isinstance(payload, dict) and isinstance(payload.get("error"), str) else None
            hint = {"invalid_client": "check client_id and client_secret",
                    "invalid_scope": "the API key lacks a scope this service needs",
                    "unauthorized_client": "the client may not use client credentials"}.get(reason or "",
                                                                                           "check the tenant's credentials")
            raise CredentialsRefused(tenant.id, f"token refused ({reason or 'no token in answer'}): {hint}",
                                     path=path, status=status, retry_at=self.wall() + self.refusal_hold)
        return payload["access_token"], cache_seconds(payload.get("expires_in"), ask.max_life)
