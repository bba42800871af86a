"""The client against the sandbox over loopback, with faults on: nothing lost, nothing doubled."""
from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest

from devtools.sandbox.data import SandboxData
from devtools.sandbox.gates import Faults
from devtools.sandbox.server import Sandbox, SandboxConfig
from devtools.synthetic import SyntheticCounts
from shared.settings import TenantConfig
from shared.source.breaker import BreakerPolicy, CircuitBreaker, MemoryBreakerStore
from shared.source.client import FhirClient
from shared.source.errors import Gone, NotFound, TokenError
from shared.source.retry import RetryPolicy
from shared.source.tokens import TokenManager

ANCHOR = datetime(2026, 1, 15, 9, tzinfo=UTC)


def client_for(box: Sandbox, *, secret: str = "sandbox-secret") -> FhirClient:
    tenant = TenantConfig(id="sandbox", name="Sandbox", fhir_base_url=box.base_url, client_id="sandbox-client",
                          client_secret=secret)
    http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=8, cooldown=2), MemoryBreakerStore())
    return FhirClient(tenant, http, TokenManager(http, user_agent="fhir-mirror-tests"), breaker,
                      policy=RetryPolicy(max_attempts=8, base_delay=0.05, max_delay=1, max_wait=90),
                      user_agent="fhir-mirror-tests", rng=random.Random(3))


@pytest.mark.timeout(240)
def test_full_paged_read_under_faults_loses_and_duplicates_nothing() -> None:
    """20,000 appointments, 10% 5xx, tokens living 30 s, 300 requests/min: every id exactly once."""
    data = SandboxData(SyntheticCounts(20, 4000, 20000, 100), seed=11, anchor=ANCHOR)
    faults = Faults(error_rate=0.10, rng=random.Random(5))
    box = Sandbox(data, SandboxConfig(token_ttl=30, rate_limit=300, faults=faults)).start()
    try:
        client = client_for(box)

        async def read_all() -> Counter[str]:
            seen: Counter[str] = Counter()
            async for resource in client.resources("Appointment", {"_count": 50}):
                seen[resource["id"]] += 1
            return seen

        started = time.monotonic()
        seen = asyncio.run(read_all())
        elapsed = time.monotonic() - started
        truth = {e["id"] for e in data.snapshot() if e["type"] == "Appointment" and not e["deleted"]}
        assert len(truth) == 20000
        assert set(seen) == truth, f"lost {len(truth - set(seen))}, unexpected {len(set(seen) - truth)}"
        assert max(seen.values()) == 1
        # The faults really happened and were ridden out; the token outlived its 30 s.
        assert box.requests > 400 and client.tokens.fetches >= 1
        print(f"\n20,000 resources in {elapsed:.1f} s over {box.requests} sandbox requests, "
              f"{client.requests} client sends, {client.tokens.fetches} token(s)")
    finally:
        box.stop()


def test_read_gone_not_found_and_bad_credentials() -> None:
    data = SandboxData(SyntheticCounts(1, 5, 5, 0), seed=2, anchor=ANCHOR)
    box = Sandbox(data, SandboxConfig()).start()
    try:
        client = client_for(box)
        deleted = data.churn(deletes=1)[0]
        alive = next(e["id"] for e in data.snapshot() if e["type"] == "Patient" and not e["deleted"])

        async def scenario() -> None:
            assert (await client.read("Patient", alive))["id"] == alive
            with pytest.raises(NotFound):
                await client.read("Patient", "PT-404")
            with pytest.raises(Gone):
                await client.read(deleted.type, deleted.id)
            with pytest.raises(TokenError, match="tenant sandbox: /oauth/token \\(HTTP 401\\)"):
                await client_for(box, secret="wrong").read("Patient", alive)

        asyncio.run(scenario())
    finally:
        box.stop()
