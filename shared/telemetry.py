"""What operators see in Application Insights: custom metrics and dimensions through OpenTelemetry.

``configure_telemetry`` turns on ``azure-monitor-opentelemetry`` when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set; without it every instrument is OpenTelemetry's
no-op (the API's proxy meter), so the local host and tests pay a function call and nothing more.

Dimensions are a closed set (``DIMENSIONS``): tenant, resource type, run id, outcome and a few
more — ids and labels the app made, never resource content. A dimension outside the set raises
at the call site, so a careless call shows in the tests, not in a patient-data leak.

Metrics (customMetrics in Application Insights; the alert rules in infra/ query these names):
- ``sync.records_synced`` — rows written (inserted, updated, deleted, resurrected), by tenant,
  resource type and path (webhook, incremental, hot, full).
- ``sync.runs`` — reconcile invocations by tenant, kind and outcome (completed, continued,
  failed, retrying); each also logs a ``sync.run`` trace whose customDimensions carry the run id.
- ``sync.freshness_lag`` — seconds since the tenant's last successful run, with ``status``
  past_threshold (over two schedule intervals, the health check's error level) or within, and
  ``sync.failed_run_streak``; both measured at every fan-out.
- ``webhook.ack_latency`` — milliseconds from a delivery's arrival to its answer, by tenant and
  outcome (enqueued, duplicate, rejected, unavailable).
- ``queue.depth``, ``queue.oldest_age`` (seconds) and ``queue.poison_messages`` by queue, read
  at every fan-out (the Functions host moves poison messages itself, so the app counts them there).
- ``source.token_failures`` by tenant and reason (refused, unavailable).
- ``webhook.silent_changes`` by tenant and resource type: changes a reconcile found that the
  tenant's webhooks should have announced.
"""
from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from opentelemetry import metrics

log = logging.getLogger("shared.telemetry")
METER_NAME = "fhir_mirror"
SERVICE_NAME = "fhir-mirror"
# Loggers exported to Application Insights: the app's own (``shared.*``). Libraries' loggers are
# left out: httpx logs every request URL at INFO, and nothing there is for operators.
LOGGER_NAME = "shared"
DIMENSIONS = frozenset({"tenant", "resource_type", "run_id", "kind", "outcome", "reason", "queue", "status"})
MAX_DIMENSION_LENGTH = 64


def dimensions(**values: object) -> dict[str, str]:
    """Attributes for a metric or a log record, checked against the closed set."""
    unknown = set(values) - DIMENSIONS
    if unknown:
        raise ValueError(f"telemetry dimensions {sorted(unknown)} are not allowed (allowed: {sorted(DIMENSIONS)})")
    return {k: str(v)[:MAX_DIMENSION_LENGTH] for k, v in values.items() if v is not None}


class Telemetry:
    """The app's instruments. ``meter_provider`` None: the global one (no-op until configured)."""

    def __init__(self, meter_provider: Any = None) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(METER_NAME)
        self._records = meter.create_counter("sync.records_synced", unit="{record}",
                                             description="Rows written to the mirror")
        self._runs = meter.create_counter("sync.runs", unit="{run}", description="Reconcile invocations by outcome")
        self._freshness = meter.create_gauge("sync.freshness_lag", unit="s",
                                             description="Seconds since the tenant's last successful reconcile")
        self._streak = meter.create_gauge("sync.failed_run_streak", unit="{run}",
                                          description="Consecutive failed reconciles of the tenant")
        self._ack = meter.create_histogram("webhook.ack_latency", unit="ms",
                                           description="From a webhook's arrival to its answer")
        self._depth = meter.create_gauge("queue.depth", unit="{message}", description="Messages in a queue")
        self._oldest = meter.create_gauge("queue.oldest_age", unit="s", description="Age of the oldest waiting message")
        self._poison = meter.create_gauge("queue.poison_messages", unit="{message}",
                                          description="Messages in a poison queue")
        self._token_failures = meter.create_counter("source.token_failures", unit="{failure}",
                                                    description="Token requests that failed")
        self._silent = meter.create_counter("webhook.silent_changes", unit="{change}",
                                            description="Changes found by a reconcile that no webhook announced")

    def records_synced(self, tenant: str, resource_type: str, kind: str, n: int) -> None:
        if n:
            self._records.add(n, dimensions(tenant=tenant, resource_type=resource_type, kind=kind))

    def run_finished(self, tenant: str, kind: str, run_id: str, outcome: str) -> None:
        self._runs.add(1, dimensions(tenant=tenant, kind=kind, outcome=outcome))
        log.info("sync.run tenant=%s kind=%s run=%s outcome=%s", tenant, kind, run_id, outcome,
                 extra=dimensions(tenant=tenant, kind=kind, run_id=run_id, outcome=outcome))

    def freshness(self, tenant: str, lag_seconds: float | None, threshold_seconds: float, failure_streak: int) -> None:
        """``status`` is ``past_threshold`` beyond the threshold (the health check's ``error``
        level: two schedule intervals), else ``within``; a tenant never synced has no lag yet."""
        if lag_seconds is not None:
            status = "past_threshold" if lag_seconds > threshold_seconds else "within"
            self._freshness.set(lag_seconds, dimensions(tenant=tenant, status=status))
        self._streak.set(failure_streak, dimensions(tenant=tenant))

    def webhook_answered(self, tenant: str, outcome: str, milliseconds: float) -> None:
        self._ack.record(milliseconds, dimensions(tenant=tenant, outcome=outcome))

    def queue(self, queue: str, depth: int, oldest_age: float | None) -> None:
        self._depth.set(depth, dimensions(queue=queue))
        self._oldest.set(oldest_age or 0.0, dimensions(queue=queue))

    def poison(self, queue: str, depth: int) -> None:
        self._poison.set(depth, dimensions(queue=queue))

    def token_failure(self, tenant: str, reason: str) -> None:
        self._token_failures.add(1, dimensions(tenant=tenant, reason=reason))

    def silent_changes(self, tenant: str, resource_type: str, n: int) -> None:
        if n:
            self._silent.add(n, dimensions(tenant=tenant, resource_type=resource_type))


_current: Telemetry | None = None
_lock = threading.Lock()


def telemetry() -> Telemetry:
    """The process's instruments (on the global meter provider unless ``use_telemetry`` set others)."""
    global _current
    with _lock:
        if _current is None:
            _current = Telemetry()
        return _current


def use_telemetry(value: Telemetry | None) -> None:
    """Install instruments (tests: on an in-memory reader); None goes back to the global ones."""
    global _current
    with _lock:
        _current = value


_configured = False


def functions_host_forwards_logs() -> bool:
    """Whether this process is the Azure Functions Python worker, whose handler on the root logger
    forwards every record to the host, which sends it to Application Insights as its own trace."""
    return any(name in sys.modules for name in ("azure_functions_worker", "proxy_worker"))


def configure_telemetry(connection_string: str | None, *, credential: Any = None, level: str = "INFO",
                        host_forwards_logs: bool | None = None) -> bool:
    """Export to Application Insights when a connection string is given; once per process.
    Returns whether exporting is on. ``credential``: Entra authentication (local auth disabled);
    ``level``: the app's loggers' level (SYNC_LOG_LEVEL; Python's default would drop INFO).
    ``host_forwards_logs`` (default: whether this is the Functions worker): the app's records then
    stop at the ``shared`` logger, so each is exported once — by OpenTelemetry, with its
    customDimensions — and not a second time through the host."""
    global _configured
    if not connection_string:
        return False
    with _lock:
        if _configured:
            return True
        from azure.monitor.opentelemetry import configure_azure_monitor
        from opentelemetry.sdk.resources import Resource

        configure_azure_monitor(connection_string=connection_string, credential=credential, logger_name=LOGGER_NAME,
                                # Application Insights' cloud role: one name for every instance
                                resource=Resource.create({"service.name": SERVICE_NAME}),
                                # the host's own request telemetry covers the HTTP triggers
                                instrumentation_options={"django": {"enabled": False}, "fastapi": {"enabled": False},
                                                         "flask": {"enabled": False}})
        app_logger = logging.getLogger(LOGGER_NAME)
        app_logger.setLevel(level)
        if functions_host_forwards_logs() if host_forwards_logs is None else host_forwards_logs:
            app_logger.propagate = False
        _configured = True
    return True
