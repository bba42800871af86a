"""One place that wires real adapters from settings (cosmicpython's bootstrap), lazily.

Nothing happens at import: the first function invocation builds the runtime, and later ones
reuse it. HTTP clients are per event loop (an httpx.AsyncClient belongs to the loop it was made
on), everything else is per process.
"""
from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from sqlalchemy import Engine

from shared.identity import azure_credential
from shared.metrics import Metrics
from shared.queues.memory import InMemoryQueues
from shared.queues.port import QueuePort
from shared.settings import Settings, TenantConfig, load_settings
from shared.source.budget import RateBudget
from shared.source.registry import SourceRegistry, source_options
from shared.store.breaker import DatabaseBreakerStore
from shared.store.declared import declare
from shared.store.engine import create_store_engine
from shared.telemetry import configure_telemetry

# Azurite's published development account key: the same on every machine, not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(queue_endpoint: str = "http://127.0.0.1:10001/devstoreaccount1") -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"QueueEndpoint={queue_endpoint};")


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    tenants: dict[str, TenantConfig]
    queues: QueuePort
    metrics: Metrics = field(default_factory=Metrics)
    # How the source clients reach the network, one per event loop (None: httpx's own). A harness
    # passes one that watches or answers requests; the code under test sends as it always does.
    transport: Callable[[], httpx.AsyncBaseTransport] | None = None
    # The wall clock the services read ("now" for schedules, leases, lags, the reads' answers).
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Per event loop, forgotten with it: a loop's id can be reused once it is gone, and its
    # registry's httpx client belongs to the closed loop.
    _registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SourceRegistry] = field(
        default_factory=weakref.WeakKeyDictionary)
    # One per process, shared by every loop's registry: a Retry-After or an opened breaker that one
    # worker meets holds the process's other workers at once; other instances see it within
    # max_age (docs/faults.md, rate-limit-storm: what this did and did not change there).
    breaker_store: DatabaseBreakerStore = field(init=False)

    def __post_init__(self) -> None:
        self.breaker_store = DatabaseBreakerStore(self.engine)
        declare(t.rest_spec() for t in self.tenants.values() if not t.is_fhir)  # their tables, for the writer

    def tenant(self, tenant_id: str) -> TenantConfig:
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            raise LookupError(f"tenant {tenant_id!r} is not configured")
        return tenant

    def rate_budget(self, tenant_id: str) -> RateBudget | None:
        """The tenant's budget as this process last saw it (from any event loop's registry)."""
        return next((b for r in list(self._registries.values()) if (b := r.budget(tenant_id))), None)

    def sources(self) -> SourceRegistry:
        """The registry of the running event loop (one httpx client per loop)."""
        loop = asyncio.get_running_loop()
        registry = self._registries.get(loop)
        if registry is None:
            http = httpx.AsyncClient(timeout=httpx.Timeout(self.settings.source_timeout),
                                     transport=self.transport() if self.transport else None)
            registry = self._registries[loop] = SourceRegistry(
                http, self.breaker_store, **source_options(self.settings))
        return registry


def queue_port(settings: Settings) -> QueuePort:
    """A connection string (Azurite locally) wins; then an identity-based connection (Azure);
    neither: queues in memory (the local host only)."""
    if settings.azure_webjobs_storage is not None:
        from shared.queues.azure import AzureQueues  # the storage SDK loads only where queues are Azure's

        value = settings.azure_webjobs_storage.get_secret_value()
        return AzureQueues.from_connection_string(
            azurite_connection_string() if value == "UseDevelopmentStorage=true" else value)
    url = queue_service_url(settings)
    if url is None:
        return InMemoryQueues()
    from shared.queues.azure import AzureQueues  # the storage SDK loads only where queues are Azure's

    return AzureQueues.from_identity(url, azure_credential(
        managed_identity=(settings.storage_credential or "").lower() == "managedidentity",
        client_id=settings.storage_client_id))


def queue_service_url(settings: Settings) -> str | None:
    if settings.storage_queue_service_uri:
        return settings.storage_queue_service_uri
    if settings.storage_account_name:
        return f"https://{settings.storage_account_name}.queue.core.windows.net"
    return None


def start_telemetry(settings: Settings, *, host_forwards_logs: bool | None = None) -> bool:
    """Application Insights when its connection string is set (Entra authentication when the
    authentication string says AAD); otherwise telemetry stays a no-op. ``host_forwards_logs``:
    see ``configure_telemetry`` (default: whether this process is the Functions worker)."""
    if settings.appinsights_connection_string is None:
        return False
    credential = None
    auth = dict(part.split("=", 1) for part in (settings.appinsights_authentication_string or "").split(";")
                if "=" in part)
    if auth.get("Authorization", "").upper() == "AAD":
        credential = azure_credential(managed_identity=True, client_id=auth.get("ClientId"))
    return configure_telemetry(settings.appinsights_connection_string.get_secret_value(), credential=credential,
                               level=settings.log_level, host_forwards_logs=host_forwards_logs)


def build_runtime(settings: Settings, *, queues: QueuePort | None = None,
                  transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
                  clock: Callable[[], datetime] | None = None) -> Runtime:
    """The real adapters from settings; ``queues``, ``transport`` and ``clock`` replace theirs (the
    local host's in-memory queues, a harness's watching transport, a test's fixed time)."""
    start_telemetry(settings)
    tenants = {t.id: t for t in settings.load_tenants()}
    runtime = Runtime(settings, create_store_engine(settings), tenants, queues or queue_port(settings),
                      transport=transport)
    if clock is not None:
        runtime.clock = clock
    return runtime


_runtime: Runtime | None = None
_lock = threading.Lock()


def runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime(load_settings())
        return _runtime


def use_runtime(value: Runtime | None) -> None:
    """Install a runtime (the local host, tests); None forgets it."""
    global _runtime
    with _lock:
        _runtime = value
