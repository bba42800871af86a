"""The sandbox's throughput for a full paged read, and the FHIR client's overhead on top of it.

    python -m bench.sandbox [--resources N] [--count N ...]

Baseline in the same process: a bare httpx loop following next links (no retries, breaker,
budget or token manager); "client" is FhirClient.resources() over the same pages.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import UTC, datetime

import httpx

from devtools.sandbox.data import SandboxData
from devtools.sandbox.server import Sandbox, SandboxConfig
from devtools.synthetic import SyntheticCounts
from shared.settings import TenantConfig
from shared.source.breaker import BreakerPolicy, CircuitBreaker, MemoryBreakerStore
from shared.source.budget import RateBudget
from shared.source.client import FhirClient
from shared.source.tokens import TokenManager


async def bare_read(box: Sandbox, count: int) -> int:
    async with httpx.AsyncClient(headers={"User-Agent": "bench"}) as http:
        token = (await http.post(f"{box.base_url}/oauth/token", data={
            "grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret"})).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        url: str | None = f"{box.base_url}/Appointment?_count={count}"
        n = 0
        while url:
            bundle = (await http.get(url, headers=headers)).json()
            n += len(bundle["entry"])
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        return n


async def client_read(box: Sandbox, count: int) -> int:
    tenant = TenantConfig(id="bench", name="Bench", fhir_base_url=box.base_url, client_id="sandbox-client",
                          client_secret="sandbox-secret")
    async with httpx.AsyncClient() as http:
        # An unlimited budget: this measures the client's own cost. (By default it paces itself to
        # Halaxy's documented 500 requests/min when a source sends no x-ratelimit headers.)
        client = FhirClient(tenant, http, TokenManager(http, user_agent="bench"),
                            CircuitBreaker(BreakerPolicy(), MemoryBreakerStore()), budget=RateBudget(limit=10**9),
                            user_agent="bench", rng=random.Random(1))
        return sum([1 async for _ in client.resources("Appointment", {"_count": count})])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=50_000, help="appointments in the sandbox")
    parser.add_argument("--count", type=int, nargs="+", default=[100, 1000], help="page sizes (_count)")
    args = parser.parse_args()
    started = time.perf_counter()
    data = SandboxData(SyntheticCounts(20, max(args.resources // 5, 1), args.resources, 0, 0), seed=1,
                       anchor=datetime(2026, 1, 15, 9, tzinfo=UTC))
    print(f"generated {sum(len(v) for v in data.by_type.values()):,} resources in {time.perf_counter() - started:.1f} s")
    box = Sandbox(data, SandboxConfig(rate_limit=0)).start()
    try:
        for count in args.count:
            rates = {}
            for label, reader in (("bare httpx", bare_read), ("FhirClient", client_read)):
                t = time.perf_counter()
                n = asyncio.run(reader(box, count))
                rates[label] = n / (time.perf_counter() - t)
                print(f"_count={count:<5} {label:<11} {n:,} resources  {rates[label]:>9,.0f} resources/s")
            print(f"_count={count:<5} client / bare: {rates['FhirClient'] / rates['bare httpx']:.2f}")
    finally:
        box.stop()


if __name__ == "__main__":
    main()
