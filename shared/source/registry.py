"""One source client per tenant per process (FHIR or REST), sharing what must be shared.

Webhook apply and reconcile in the same process get the same client, so they share the token
cache (single-flight refresh), the Retry-After gate and the rate budget (with its real-time
reserve). Across instances the breaker is shared through the database; the budget coordinates
through the source itself, since every instance reads the same x-ratelimit-remaining.
"""
from __future__ import annotations

from typing import Any

import httpx

from shared.rest.source import RestSource
from shared.settings import Settings, TenantConfig
from shared.source.breaker import DEFAULT_BREAKER, BreakerPolicy, BreakerStore, CircuitBreaker
from shared.source.budget import RateBudget
from shared.source.client import FhirClient
from shared.source.protocol import Source
from shared.source.tokens import TokenManager

USER_AGENT = "fhir-mirror/0.1 (+sync service)"
HALAXY_RATE_LIMIT = 500  # requests a minute, until the source's x-ratelimit-limit says otherwise


def source_options(settings: Settings) -> dict[str, Any]:
    """SourceRegistry's keyword arguments from the settings."""
    return {"breaker_policy": BreakerPolicy(failure_threshold=settings.breaker_failures,
                                            cooldown=settings.breaker_cooldown),
            "credentials_retry_after": settings.credentials_retry_after}


class SourceRegistry:
    def __init__(self, http: httpx.AsyncClient, breaker_store: BreakerStore, *,
                 breaker_policy: BreakerPolicy = DEFAULT_BREAKER, user_agent: str = USER_AGENT,
                 credentials_retry_after: float = 300.0) -> None:
        self.http, self.user_agent = http, user_agent
        self.tokens = TokenManager(http, user_agent=user_agent, refusal_hold=credentials_retry_after)
        self.breaker = CircuitBreaker(breaker_policy, breaker_store)
        self._clients: dict[str, FhirClient] = {}
        self._sources: dict[str, RestSource] = {}

    def source(self, tenant: TenantConfig) -> Source:
        """The tenant's source, whatever its kind, shared by everything in this process."""
        if tenant.is_fhir:
            return self.client(tenant)
        existing = self._sources.get(tenant.id)
        if existing is not None and existing.tenant == tenant:
            return existing
        source = RestSource(tenant, self.http, self.tokens, self.breaker, budget=rest_budget(tenant),
                            user_agent=self.user_agent)
        self._sources[tenant.id] = source
        return source

    def client(self, tenant: TenantConfig) -> FhirClient:
        existing = self._clients.get(tenant.id)
        if existing is not None and existing.tenant == tenant:
            return existing
        client = FhirClient(tenant, self.http, self.tokens, self.breaker,
                            budget=RateBudget(limit=tenant.rate_limit or HALAXY_RATE_LIMIT), user_agent=self.user_agent)
        self._clients[tenant.id] = client
        return client

    def budget(self, tenant_id: str) -> RateBudget | None:
        """The tenant's rate budget in this registry, once it has a client here."""
        client = self._clients.get(tenant_id) or self._sources.get(tenant_id)
        return client.budget if client is not None else None


def rest_budget(tenant: TenantConfig) -> RateBudget:
    """The tenant's own limit (a minute's requests), else its spec's, else Halaxy's 500 a minute."""
    if tenant.rate_limit is not None:
        return RateBudget(limit=tenant.rate_limit, window=60.0)
    declared = tenant.rest_spec().rate_limit
    if declared is not None:
        return RateBudget(limit=declared.requests, window=declared.per_seconds)
    return RateBudget(limit=HALAXY_RATE_LIMIT)
