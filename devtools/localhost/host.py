"""The local host: drives the same function_app.py the Functions host runs in Azure.

- HTTP triggers on 127.0.0.1 under host.json's route prefix (``/api``), routes as registered;
- timer triggers on their NCRONTAB schedules (``%SETTING%`` resolved from the settings);
- queue triggers pumped from the queue port (Azurite or in memory) as the Functions host does:
  batches of host.json's batchSize handled concurrently, the next batch fetched once no more
  than newBatchThreshold are in flight; maxDequeueCount, the retry delay (visibilityTimeout) and
  ``<queue>-poison``;
- coroutine functions run on one event loop thread, as the Python worker does.

Standard library HTTP server on purpose: a few routes, loopback only, and nothing to install.
``GET /admin/host/status`` reports functions, queue counters and timers.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from devtools.localhost.routes import Route, best_match, compile_route
from shared.blueprints import body_limit
from shared.blueprints.invoke import FunctionSpec, call_http, call_queue, call_timer, function_index
from shared.queues.port import QueuePort, ReceivedMessage, poison_name, settle
from shared.settings import Settings
from shared.sync.schedule import is_valid, next_fire
from shared.webhooks.allowlist import CLIENT_IP_HEADER

log = logging.getLogger("devtools.localhost")
ROOT = Path(__file__).resolve().parents[2]
IDLE_TIMEOUT = 30.0
# Headers that may appear more than once (lists by definition); any other repeated header is
# ambiguous — which signature, which key? — and the request is refused.
LIST_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "cache-control", "via", "forwarded",
                          "x-forwarded-for", "cookie", "te", "connection"})
# After an empty receive the next poll waits this long, doubling up to maxPollingInterval (the
# Functions host's queue listener does the same from 100 ms). Each poll is a storage request (about
# 2 ms of this process's CPU through the SDK): polling every 10 ms cost more than the work at 20/s.
MIN_POLL = 0.1


def load_host_json(path: Path = ROOT / "host.json") -> dict[str, Any]:
    return json.loads(path.read_text())


def timespan_seconds(value: str | None, default: float) -> float:
    """host.json's "hh:mm:ss" timespans."""
    if not value:
        return default
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def resolve_setting(value: str, settings: Settings) -> str:
    """``%SYNC_FANOUT_SCHEDULE%`` → the settings' value, as the Functions host reads app settings."""
    if not (value.startswith("%") and value.endswith("%")):
        return value
    name = value.strip("%")
    field = name.removeprefix("SYNC_").lower()
    resolved = getattr(settings, field, None) if name.startswith("SYNC_") else None
    if not isinstance(resolved, str):
        raise LookupError(f"app setting {name} is not a known setting; add it to shared.settings.Settings")
    return resolved


class _Server(ThreadingHTTPServer):
    # The standard library listens with a backlog of 5: a burst of webhook senders would see
    # connection resets before a thread could accept them.
    request_queue_size = 512
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up or goes silent is routine for a server: no traceback for it."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        log.exception("local host: request from %s failed", client_address[0])


class LocalHost:
    def __init__(self, app: Any, settings: Settings, queues: QueuePort, *, port: int = 7071,
                 host_json: dict[str, Any] | None = None, max_poll: float | None = None,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        config = host_json or load_host_json()
        queue_config = config.get("extensions", {}).get("queues", {})
        self.settings, self.queues, self.idle_timeout = settings, queues, idle_timeout
        self.functions = function_index(app)
        self.route_prefix = config.get("extensions", {}).get("http", {}).get("routePrefix", "api").strip("/")
        self.max_dequeue_count = int(queue_config.get("maxDequeueCount", 5))
        self.retry_delay = timespan_seconds(queue_config.get("visibilityTimeout"), 0)
        self.lease_seconds = timespan_seconds(config.get("functionTimeout"), 600)
        self.max_poll = max_poll if max_poll is not None else timespan_seconds(
            queue_config.get("maxPollingInterval"), 2)
        self.batch_size = max(1, min(32, int(queue_config.get("batchSize", 16))))  # 32: the service's maximum
        self.new_batch_threshold = max(0, int(queue_config.get("newBatchThreshold", self.batch_size // 2)))
        self.routes: list[tuple[Route, object]] = [
            (compile_route(spec.trigger.get("route") or spec.name), spec)
            for spec in self.functions.values() if spec.kind == "httpTrigger"]
        self.schedules = {spec.name: resolve_setting(spec.trigger["schedule"], settings)
                          for spec in self.functions.values() if spec.kind == "timerTrigger"}
        for name, schedule in self.schedules.items():
            if not is_valid(schedule):
                raise ValueError(f"timer {name}: schedule {schedule!r} is not NCRONTAB")
        self.queue_stats: dict[str, Counter[str]] = {
            spec.trigger["queueName"]: Counter(handled=0, failed=0, poisoned=0)
            for spec in self.functions.values() if spec.kind == "queueTrigger"}
        self.timer_stats: dict[str, dict[str, Any]] = {name: {"fired": 0, "next": None} for name in self.schedules}
        self._busy = Counter[str]()  # received and not yet settled, per queue
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop = asyncio.new_event_loop()
        self.server = _Server(("127.0.0.1", port), _handler_for(self))

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalHost:
        self._spawn("event-loop", self._loop.run_forever)
        self._spawn("http", self.server.serve_forever)
        for spec in self.functions.values():
            if spec.kind == "queueTrigger":
                self._spawn(f"queue-{spec.name}", self._pump, spec)
            elif spec.kind == "timerTrigger":
                self._spawn(f"timer-{spec.name}", self._timer, spec)
        log.debug("local host on %s: %s", self.url, ", ".join(sorted(self.functions)))  # `serve` prints a banner
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._settled:
            self._settled.notify_all()  # a pump waiting for room to fetch
        if self._threads:  # shutdown() waits for serve_forever, which only runs once started
            self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            if thread.name not in ("event-loop", "http"):
                thread.join(timeout=self.max_poll + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def run(self, awaitable: Awaitable[Any]) -> Any:
        """Run a coroutine on the host's event loop and wait for its result."""
        return self.submit(awaitable).result()

    def submit(self, awaitable: Awaitable[Any]) -> Future[Any]:
        """Start a coroutine on the host's event loop; its result comes in the future."""
        return asyncio.run_coroutine_threadsafe(awaitable, self._loop)  # type: ignore[arg-type]  # a function's coroutine

    # -- queues ------------------------------------------------------------------------------
    def _pump(self, spec: FunctionSpec) -> None:
        """Fetch a batch when no more than newBatchThreshold messages are in flight; each message
        is handled on a worker thread (its coroutine on the event loop) and settled on its own."""
        queue = spec.trigger["queueName"]
        wait = MIN_POLL
        with ThreadPoolExecutor(self.batch_size + self.new_batch_threshold,
                                thread_name_prefix=f"queue-{spec.name}") as workers:
            while not self._stop.is_set():
                with self._settled:
                    self._settled.wait_for(lambda: self._busy[queue] <= self.new_batch_threshold
                                           or self._stop.is_set())
                if self._stop.is_set():
                    break
                try:
                    batch = self.queues.receive(queue, max_messages=self.batch_size,
                                                visibility_timeout=self.lease_seconds)
                except Exception as exc:
                    log.warning("queue %s unavailable: %s", queue, exc.__class__.__name__)
                    batch = []
                if batch:
                    with self._lock:
                        self._busy[queue] += len(batch)
                    for message in batch:
                        workers.submit(self._handle, spec, queue, message)
                    wait = MIN_POLL
                    continue
                self._stop.wait(wait)
                wait = min(wait * 2, self.max_poll)

    def _handle(self, spec: FunctionSpec, queue: str, message: ReceivedMessage) -> None:
        def call(message: ReceivedMessage) -> None:
            try:
                call_queue(spec, self.run, message_id=message.id, text=message.text,
                           dequeue_count=message.dequeue_count)
            except Exception as exc:
                log.warning("function %s failed on message %s (attempt %d of %d): %s", spec.name, message.id,
                            message.dequeue_count, self.max_dequeue_count, exc.__class__.__name__)
                log.debug("function %s traceback", spec.name, exc_info=True)
                raise

        try:
            outcome = settle(self.queues, queue, message, call, max_dequeue_count=self.max_dequeue_count,
                             retry_delay=self.retry_delay)
        except Exception as exc:
            log.warning("queue %s: message %s not settled: %s", queue, message.id, exc.__class__.__name__)
            outcome = "unsettled"
        if outcome == "poisoned":
            log.error("queue %s: message %s moved to %s", queue, message.id, poison_name(queue))
        with self._settled:
            self.queue_stats[queue][outcome] += 1
            self._busy[queue] -= 1
            self._settled.notify_all()

    def idle(self) -> bool:
        """No message waiting or in flight on any trigger queue."""
        with self._lock:
            if any(self._busy.values()):
                return False
        return all(self.queues.count(queue) == 0 for queue in self.queue_stats)

    def wait_idle(self, timeout: float, settle: float = 0.3) -> bool:
        """True once the queues stayed idle for ``settle`` seconds; False at the timeout."""
        deadline, quiet_since = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.idle():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    return True
            else:
                quiet_since = None
            time.sleep(0.05)
        return False

    # -- timers ------------------------------------------------------------------------------
    def _timer(self, spec: FunctionSpec) -> None:
        schedule = self.schedules[spec.name]
        if spec.trigger.get("runOnStartup"):
            self._fire(spec, past_due=False)
        while not self._stop.is_set():
            due = next_fire(schedule, datetime.now(UTC))
            self.timer_stats[spec.name]["next"] = due.isoformat()
            while not self._stop.is_set() and (left := (due - datetime.now(UTC)).total_seconds()) > 0:
                self._stop.wait(min(left, 1.0))
            if not self._stop.is_set():
                self._fire(spec, past_due=(datetime.now(UTC) - due).total_seconds() > 1)

    def _fire(self, spec: FunctionSpec, *, past_due: bool) -> None:
        try:
            call_timer(spec, self.run, past_due=past_due)
        except Exception as exc:
            log.error("timer %s failed: %s", spec.name, exc.__class__.__name__)
            log.debug("timer %s traceback", spec.name, exc_info=True)
        self.timer_stats[spec.name]["fired"] += 1

    # -- HTTP --------------------------------------------------------------------------------
    def key_refusal(self, spec: FunctionSpec, header: str | None, query: list[tuple[str, str]]) -> str | None:
        """Azure's auth levels with LOCAL_FUNCTION_KEY as the one key: anonymous routes are open,
        function and admin routes want the key (header ``x-functions-key`` or query ``code``).
        None when the request may pass, else why not: no key offered, or a wrong one."""
        return self.key_refusal_for(spec.trigger.get("authLevel", "FUNCTION"), header, query)

    def key_refusal_for(self, auth_level: str, header: str | None, query: list[tuple[str, str]]) -> str | None:
        """As ``key_refusal``, for an auth level: the admin API (/admin/...) is ADMIN, as on Azure
        where it needs the master key; here LOCAL_FUNCTION_KEY serves as both."""
        secret = self.settings.local_function_key
        key = secret.get_secret_value() if secret else ""
        if not key or auth_level.upper() == "ANONYMOUS":
            return None
        offered = header if header is not None else next((v for k, v in query if k == "code"), None)
        if not offered:
            return "function-key-required"
        return None if hmac.compare_digest(offered.encode(), key.encode()) else "function-key-invalid"

    def status(self) -> dict[str, Any]:
        with self._lock:
            queues = {q: {**stats, "depth": self._depth(q), "poison_depth": self._depth(poison_name(q))}
                      for q, stats in self.queue_stats.items()}
        return {"state": "Running", "functions": {n: s.kind for n, s in sorted(self.functions.items())},
                "queues": queues, "timers": self.timer_stats}

    def _depth(self, queue: str) -> int | None:
        try:
            return self.queues.count(queue)
        except Exception:
            return None


def _json(status: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _handler_for(host: LocalHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = host.idle_timeout  # a connection silent this long (idle, or a slow request) is closed

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def version_string(self) -> str:
            return "fhir-mirror-localhost"  # not http.server's, which names Python's version

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def __getattr__(self, name: str) -> Any:
            # Any other method (TRACE, OPTIONS, HEAD…) gets the route's 405 or a 404, as from the
            # Functions host; http.server would answer 501, a server error.
            if name.startswith("do_") and name[3:].isalpha():
                return lambda: self._serve(name[3:])
            raise AttributeError(name)

        def _serve(self, method: str) -> None:
            status, headers, body = self._answer(method)
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if method != "HEAD":  # a HEAD answer has the headers of the body it does not send
                self.wfile.write(body)

        def _answer(self, method: str) -> tuple[int, dict[str, str], bytes]:
            """Refuse early, read last: framing and duplicated headers, then the route, its method
            and the key, and only then a body within the route's limit."""
            split = urlsplit(self.path)
            query = parse_qsl(split.query)
            if (refused := self._framing_refusal()) is not None:
                self.close_connection = True  # the body, if any, is not read
                return refused
            if split.path.rstrip("/").startswith("/admin/"):
                refusal = host.key_refusal_for("ADMIN", self.headers.get("x-functions-key"), query)
                if refusal is not None:
                    return _json(401, {"error": refusal})
                if method == "GET" and split.path.rstrip("/") == "/admin/host/status":
                    return _json(200, host.status())
                return _json(404, {"error": "not-found"})
            prefix = f"/{host.route_prefix}/" if host.route_prefix else "/"
            found = best_match(host.routes, split.path[len(prefix) - 1:]) if split.path.startswith(prefix) else None
            if found is None:
                return self._refuse_unread(404, {"error": "not-found"})
            spec, route_params = found
            assert isinstance(spec, FunctionSpec)
            methods = [m.upper() for m in spec.trigger.get("methods") or []]
            if methods and method not in methods:
                return self._refuse_unread(405, {"error": "method-not-allowed", "allowed": methods})
            refusal = host.key_refusal(spec, self.headers.get("x-functions-key"), query)
            if refusal is not None:
                return self._refuse_unread(401, {"error": refusal})
            length = int(self.headers.get("Content-Length") or 0)
            if length > body_limit(spec.name):
                return self._refuse_unread(413, {"error": "body-too-large", "limit": body_limit(spec.name)})
            body = self.rfile.read(length) if length else b""
            if len(body) < length:  # the client closed (or half-closed) before sending it all
                self.close_connection = True
                return _json(400, {"error": "incomplete-body"})
            # As App Service's front end does: client-ip is the caller's address and port, whatever
            # the caller sent under that name (shared/webhooks/allowlist.py).
            headers = {k: v for k, v in self.headers.items() if k.lower() != CLIENT_IP_HEADER}
            peer = self.client_address
            headers[CLIENT_IP_HEADER] = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
            try:
                response = call_http(spec, host.run, method=method, url=f"{host.url}{self.path}",
                                     headers=headers, params=dict(query),
                                     route_params=route_params, body=body)
            except Exception:
                log.exception("function %s failed", spec.name)  # HTTP functions answer every expected failure
                return _json(500, {"error": "function-failed", "function": spec.name})
            return response.status, response.headers, response.body

        def _framing_refusal(self) -> tuple[int, dict[str, str], bytes] | None:
            """One framing rule: a body has exactly one numeric Content-Length and no
            Transfer-Encoding; and no header appears twice unless it is a list by definition."""
            lengths = self.headers.get_all("Content-Length") or []
            if self.headers.get_all("Transfer-Encoding"):
                return _json(400, {"error": "ambiguous-framing"}) if lengths else _json(411, {"error": "length-required"})
            if len(lengths) > 1:
                return _json(400, {"error": "ambiguous-framing"})
            if lengths and not (lengths[0].isascii() and lengths[0].strip().isdigit()):
                return _json(400, {"error": "bad-content-length"})
            counts = Counter(name.lower() for name in self.headers)
            repeated = sorted(n for n, c in counts.items() if c > 1 and n not in LIST_HEADERS)
            if repeated:
                return _json(400, {"error": "duplicate-header", "header": repeated[0]})
            return None

        def _refuse_unread(self, status: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
            """A refusal before the body was read: the connection closes rather than drain it."""
            if int(self.headers.get("Content-Length") or 0):
                self.close_connection = True
            return _json(status, body)

    return Handler
