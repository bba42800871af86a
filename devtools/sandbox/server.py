"""The sandbox's HTTP face: a Halaxy-like FHIR R4 API on 127.0.0.1.

Built on the standard library's ThreadingHTTPServer rather than an ASGI stack: its faults need
the raw socket (a connection dropped with a TCP reset, no response at all), and it adds nothing
to what Azure installs. Routes:

    POST /main/oauth/token             client credentials (form or JSON) -> bearer token
    GET  /main/{Type}?_count&page&_lastUpdated&date&_id   searchset Bundle, total, next link
    GET  /main/{Type}/{id}             the resource; 404 unknown, 410 deleted
    GET  /_sandbox/snapshot            the truth: type, id, versionId, lastUpdated, deleted
    POST /_sandbox/churn               {"creates": n, "updates": n, "deletes": n}
    GET|POST /_sandbox/faults          read / change fault_rate, drop_rate, hang_rate, hang_ms, latency_ms, rate_limit
    GET  /_sandbox/deliveries          every webhook notification sent: event, id, attempts, status
"""
from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from devtools.sandbox.data import TYPES, SandboxData
from devtools.sandbox.gates import Faults, SlidingWindow, TokenStore
from devtools.sandbox.notify import Notifier, WebhookConfig
from devtools.sandbox.search import BadRequest

FHIR_JSON = "application/fhir+json"
DEFAULT_COUNT, MAX_COUNT = 100, 1000
MAX_BODY = 1 << 20
log = logging.getLogger(__name__)


@dataclass
class SandboxConfig:
    client_id: str = "sandbox-client"
    client_secret: str = "sandbox-secret"
    token_ttl: float = 900.0
    rate_limit: int = 500  # requests per minute per client; 0 = unlimited
    # Send x-ratelimit-limit / x-ratelimit-remaining; off, a client learns of the limit only from a
    # 429's Retry-After (a source that does not advertise its budget).
    advertise_limit: bool = True
    faults: Faults = field(default_factory=Faults)
    # How an expired token is answered: "401", "outcome" (403 + OperationOutcome 'expired'),
    # or "mixed" (alternating), since Halaxy is documented to do either.
    expired_style: str = "mixed"
    webhook: WebhookConfig | None = None


def outcome(code: str, diagnostics: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request (a crashed worker, a timeout) is routine for a source."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class Served:
    """A sandbox's loopback server: start() runs it in a background thread (tests), serve() in
    front (the CLI); stop() also stops its webhook sender. Shared by the FHIR and REST sandboxes."""

    httpd: _Server
    thread_name = "sandbox"

    def _listen(self, host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        sender = self.webhook_sender()
        if sender is not None:
            sender.close()

    def webhook_sender(self) -> Notifier | None:
        return None


class Sandbox(Served):
    """The FHIR sandbox's server and its state."""

    def __init__(self, data: SandboxData, config: SandboxConfig, *, host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.data, self.config = data, config
        self.tokens = TokenStore(config.token_ttl, clock)
        self.limiter = SlidingWindow(config.rate_limit, 60.0, clock)
        self.requests = 0
        self.hangs = 0  # requests held and dropped unanswered (Faults.hang_rate)
        self._expired_answers = 0
        self._lock = threading.Lock()
        self._listen(host, port, type("Handler", (_Handler,), {"sandbox": self}))
        self.notifier = Notifier(config.webhook, self.base_url) if config.webhook else None

    @property
    def base_url(self) -> str:
        return f"{self.origin}/main"

    def webhook_sender(self) -> Notifier | None:
        return self.notifier

    def next_expired_style(self) -> str:
        if self.config.expired_style != "mixed":
            return self.config.expired_style
        with self._lock:
            self._expired_answers += 1
            return "401" if self._expired_answers % 2 else "outcome"


def _number(spec: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """``spec[name]`` as ``kind`` (int or float), or ``default``; a 400 when it is not a number."""
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRequest(f"{name}: expected a number")
    try:
        return kind(value)
    except (ValueError, OverflowError):
        raise BadRequest(f"{name}: expected a number") from None


def fault_settings(sandbox: Any, spec: dict[str, Any] | None) -> dict[str, Any]:
    """``/_sandbox/faults`` of any sandbox (its ``config.faults``, ``config.rate_limit``, ``limiter``,
    ``requests``): change them from ``spec`` when given, then report them."""
    faults = sandbox.config.faults
    if spec is not None:
        # Parse everything before changing anything: a bad value leaves all as it was.
        error_rate = _number(spec, "fault_rate", float, faults.error_rate)
        drop_rate = _number(spec, "drop_rate", float, faults.drop_rate)
        latency_ms = _number(spec, "latency_ms", int, faults.latency_ms)
        hang_rate = _number(spec, "hang_rate", float, faults.hang_rate)
        hang_ms = _number(spec, "hang_ms", int, faults.hang_ms)
        rate_limit = _number(spec, "rate_limit", int, sandbox.config.rate_limit)
        if not (0 <= error_rate <= 1 and 0 <= drop_rate <= 1 and 0 <= hang_rate <= 1
                and latency_ms >= 0 and hang_ms >= 0 and rate_limit >= 0):
            raise BadRequest("rates are shares between 0 and 1; latency and limit are not negative")
        faults.error_rate, faults.drop_rate, faults.latency_ms = error_rate, drop_rate, latency_ms
        faults.hang_rate, faults.hang_ms = hang_rate, hang_ms
        sandbox.config.rate_limit = sandbox.limiter.limit = rate_limit
    return {**faults.settings(), "rate_limit": sandbox.config.rate_limit, "requests": sandbox.requests}


class _Handler(BaseHTTPRequestHandler):
    sandbox: Sandbox
    protocol_version = "HTTP/1.1"
    server_version = "FhirSandbox/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, status: int, body: bytes | dict[str, Any] | list[Any], headers: dict[str, str] | None = None,
              content_type: str = FHIR_JSON) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _drop(self) -> None:
        # A TCP reset, no response: what a crashed proxy or an idle-timeout looks like.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if length < 0 or length > MAX_BODY:
            raise BadRequest("request body too large")
        return self.rfile.read(length) if length else b""

    def _json_object(self) -> dict[str, Any]:
        try:
            spec = json.loads(self._body() or b"{}")
        except ValueError:
            raise BadRequest("the body is not JSON") from None
        if not isinstance(spec, dict):
            raise BadRequest("expected a JSON object")
        return spec

    def _faulted(self) -> bool:
        sandbox = self.sandbox
        with sandbox._lock:
            sandbox.requests += 1
        faults = sandbox.config.faults
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        fault = faults.draw()
        if fault == "hang":
            with sandbox._lock:
                sandbox.hangs += 1
            time.sleep(faults.hang_ms / 1000)
        if fault in ("drop", "hang"):
            self._drop()
            return True
        if isinstance(fault, int):
            self._send(fault, outcome("transient", "injected fault"))
            return True
        return False

    # -- routes -----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        try:
            if parts[:1] == ["_sandbox"]:
                self._admin(method, parts[1:])
                return
            if parts[:1] != ["main"]:
                self._send(404, outcome("not-found", "unknown path"))
                return
            if self._faulted():
                return
            if not self.headers.get("User-Agent"):
                self._send(403, outcome("forbidden", "a User-Agent header is required"))
                return
            if method == "POST" and parts[1:] == ["oauth", "token"]:
                self._token()
                return
            client = self._authorised()
            if client is None:
                return
            admitted, remaining, retry_after = self.sandbox.limiter.admit(client)
            limit = self.sandbox.config.rate_limit
            advertised = limit > 0 and self.sandbox.config.advertise_limit
            limits = {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining)} if advertised else {}
            if not admitted:
                self._send(429, outcome("throttled", "rate limit exceeded"), {**limits, "retry-after": str(retry_after)})
                return
            if method == "GET" and len(parts) == 2:
                self._search(parts[1], parse_qs(url.query, keep_blank_values=True), limits)
            elif method == "GET" and len(parts) == 3:
                self._read(parts[1], parts[2], limits)
            else:
                self._send(405 if len(parts) in (2, 3) else 404, outcome("not-supported", "not supported"), limits)
        except BadRequest as exc:
            self._send(400, outcome("invalid", str(exc)))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            # A bug in the sandbox, never the client's fault: a 500 and the traceback in the log
            # (a catch-all 400 once hid a TypeError behind every answer).
            log.exception("sandbox: %s %s failed", method, url.path)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send(500, outcome("exception", "sandbox error (see its log)"))

    def _token(self) -> None:
        body = self._body()
        content_type = self.headers.get("Content-Type", "")
        try:
            if "json" in content_type:
                form = {k: str(v) for k, v in json.loads(body or b"{}").items()}
            else:
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        except (ValueError, AttributeError):
            self._send(400, {"error": "invalid_request"}, content_type="application/json")
            return
        config = self.sandbox.config
        if form.get("grant_type") != "client_credentials":
            self._send(400, {"error": "unsupported_grant_type"}, content_type="application/json")
            return
        if form.get("client_id") != config.client_id or form.get("client_secret") != config.client_secret:
            self._send(401, {"error": "invalid_client"}, content_type="application/json")
            return
        # Like Halaxy: expires_in says an hour whatever the token's real life.
        self._send(200, {"access_token": self.sandbox.tokens.issue(), "token_type": "Bearer", "expires_in": 3600},
                   content_type="application/json")

    def _authorised(self) -> str | None:
        header = self.headers.get("Authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        state = self.sandbox.tokens.check(token) if token else "unknown"
        if state == "ok":
            return self.sandbox.config.client_id
        if state == "expired" and self.sandbox.next_expired_style() == "outcome":
            self._send(403, outcome("expired", "access token expired"))
        else:
            self._send(401, outcome("login", "invalid or expired access token"),
                       {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    def _search(self, kind: str, params: dict[str, list[str]], headers: dict[str, str]) -> None:
        if kind not in TYPES:
            self._send(404, outcome("not-supported", f"unknown resource type {kind[:40]}"), headers)
            return
        try:
            count = min(int(params.get("_count", [DEFAULT_COUNT])[0]), MAX_COUNT)
            page = int(params.get("page", ["1"])[0])
        except ValueError:
            raise BadRequest("_count and page must be integers") from None
        if count < 1 or page < 1:
            raise BadRequest("_count and page must be positive")
        total, chunk = self.sandbox.data.search(kind, params, offset=(page - 1) * count, limit=count)
        if hidden := self.sandbox.config.faults.hidden:
            chunk = [stored for stored in chunk if stored.resource["id"] not in hidden]
        base = self.sandbox.base_url
        query = {k: v for k, v in params.items() if k != "page"}
        links = [{"relation": "self", "url": f"{base}/{kind}?{urlencode({**query, 'page': page}, doseq=True)}"}]
        if page * count < total:
            links.append({"relation": "next", "url": f"{base}/{kind}?{urlencode({**query, 'page': page + 1}, doseq=True)}"})
        entries = b",".join(
            b'{"fullUrl":"%s/%s/%s","resource":%s,"search":{"mode":"match"}}'
            % (base.encode(), kind.encode(), s.resource["id"].encode(), s.encoded) for s in chunk)
        head = json.dumps({"resourceType": "Bundle", "type": "searchset", "total": total, "link": links},
                          separators=(",", ":")).encode()
        self._send(200, head[:-1] + b',"entry":[' + entries + b"]}", headers)

    def _read(self, kind: str, rid: str, headers: dict[str, str]) -> None:
        stored = self.sandbox.data.read(kind, rid)
        if stored is None:
            self._send(404, outcome("not-found", f"{kind[:40]}/{rid[:64]} is not known"), headers)
        elif stored.deleted_at is not None:
            self._send(410, outcome("deleted", f"{kind}/{rid} was deleted"), headers)
        else:
            self._send(200, stored.encoded, {**headers, "ETag": f'W/"{stored.version}"'})

    def _admin(self, method: str, parts: list[str]) -> None:
        sandbox = self.sandbox
        if method == "GET" and parts == ["snapshot"]:
            self._send(200, sandbox.data.snapshot(), content_type="application/json")
        elif method == "POST" and parts == ["churn"]:
            spec = self._json_object()
            counts = {k: _number(spec, k, int, 0) for k in ("creates", "updates", "deletes")}
            if min(counts.values()) < 0:
                raise BadRequest("creates, updates and deletes are not negative")
            try:
                changes = sandbox.data.churn(**counts)
            except ValueError as exc:  # nothing left to update or delete
                raise BadRequest(str(exc)) from None
            if sandbox.notifier is not None:
                sandbox.notifier.notify(changes)
            self._send(200, {"changes": [c.as_dict() for c in changes]}, content_type="application/json")
        elif method == "GET" and parts == ["deliveries"]:
            log = sandbox.notifier.deliveries() if sandbox.notifier else []
            self._send(200, log, content_type="application/json")
        elif parts == ["faults"]:
            self._send(200, fault_settings(sandbox, self._json_object() if method == "POST" else None),
                       content_type="application/json")
        else:
            self._send(404, outcome("not-found", "unknown sandbox endpoint"))
