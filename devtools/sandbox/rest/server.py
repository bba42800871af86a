"""RestSandbox: one of the REST APIs (apis.py) served on 127.0.0.1, with the FHIR sandbox's
plumbing: injected faults, a sliding-window rate limit with x-ratelimit headers and 429 +
Retry-After, and the admin routes every sandbox has:

    GET  /_sandbox/snapshot      the truth: [{type, id, lastUpdated (null if the API has none), deleted}]
    POST /_sandbox/churn         {"creates": n, "updates": n, "deletes": n}
    GET|POST /_sandbox/faults    fault_rate, drop_rate, hang_rate, hang_ms, latency_ms, rate_limit
    GET  /_sandbox/deliveries    the webhooks sent (HIE, PPB, with a webhook URL), each attempt's outcome
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devtools.sandbox.gates import Faults, SlidingWindow, TokenStore
from devtools.sandbox.rest.apis import Api, Req
from devtools.sandbox.rest.hooks import EventSender
from devtools.sandbox.rest.store import Change
from devtools.sandbox.search import BadRequest
from devtools.sandbox.server import Served, _Handler, _number, fault_settings, log


@dataclass
class RestConfig:
    rate_limit: int = 600
    advertise_limit: bool = True
    token_ttl: float = 900.0
    faults: Faults = field(default_factory=Faults)
    webhook_url: str | None = None  # where HIE and PPB send their events (loopback only)
    webhook_secret: str = ""
    webhook_options: dict[str, Any] = field(default_factory=dict)  # EventSender's (the fault harness)


class RestSandbox(Served):
    def __init__(self, api: Api, config: RestConfig, *, host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api, self.config = api, config
        self.tokens = TokenStore(config.token_ttl, clock)
        self.limiter = SlidingWindow(config.rate_limit, 60.0, clock)
        self.requests = self.hangs = 0
        self._lock = threading.Lock()
        self.thread_name = f"sandbox-{api.name}"
        self._listen(host, port, type("RestHandler", (_RestHandler,), {"sandbox": self}))
        self.sender = (EventSender(config.webhook_url, config.webhook_secret, api.webhook_header,
                                   **config.webhook_options)
                       if config.webhook_url and api.webhook_header else None)

    @property
    def base_url(self) -> str:
        return self.origin

    def webhook_sender(self) -> EventSender | None:
        return self.sender

    def churn(self, creates: int, updates: int, deletes: int) -> list[Change]:
        api = self.api
        changes = api.store.churn(creates, updates, deletes, create=api.create, update=api.update,
                                  entities=list(api.entities))
        if self.sender is not None:
            for change in changes:
                self.sender.send(change, api.event(change))
        return changes


class _RestHandler(_Handler):
    sandbox: RestSandbox  # type: ignore[assignment]
    server_version = "RestSandbox/1.0"

    def _reply(self, answer: tuple[int, Any, dict[str, str]], extra: dict[str, str] | None = None) -> None:
        status, body, headers = answer
        self._send(status, body, {**(extra or {}), **headers}, content_type="application/json")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        try:
            if parts[:1] == ["_sandbox"]:
                self._admin(method, parts[1:])
                return
            if self._faulted():
                return
            raw = self._body()
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                raise BadRequest("the body is not JSON") from None
            headers = {k.lower(): v for k, v in self.headers.items()}
            sandbox, api = self.sandbox, self.sandbox.api
            req = Req(method, parts, parse_qs(url.query, keep_blank_values=True), headers, body, sandbox.base_url)
            token = api.token_route(req, sandbox.tokens)
            if token is not None:
                self._reply(token)
                return
            refused = api.authenticate(req, sandbox.tokens)
            if refused is not None:
                self._reply(refused)
                return
            admitted, remaining, retry_after = sandbox.limiter.admit(api.name)
            limit = sandbox.config.rate_limit
            limits = ({"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining)}
                      if limit > 0 and sandbox.config.advertise_limit else {})
            if not admitted:
                self._reply((429, {"error": "rate limit exceeded"}, {"retry-after": str(retry_after)}), limits)
                return
            self._reply(api.route(req), limits)
        except BadRequest as exc:
            self._send(400, {"error": str(exc)}, content_type="application/json")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            log.exception("sandbox: %s %s failed", method, url.path)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send(500, {"error": "sandbox error (see its log)"}, content_type="application/json")

    def _admin(self, method: str, parts: list[str]) -> None:
        sandbox = self.sandbox
        if method == "GET" and parts == ["snapshot"]:
            self._send(200, sandbox.api.store.snapshot(sandbox.api.last_updated), content_type="application/json")
        elif method == "POST" and parts == ["churn"]:
            spec = self._json_object()
            counts = {k: _number(spec, k, int, 0) for k in ("creates", "updates", "deletes")}
            if min(counts.values()) < 0:
                raise BadRequest("creates, updates and deletes are not negative")
            try:
                changes = sandbox.churn(**counts)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            self._send(200, {"changes": [{"type": c.entity, "id": c.id, "action": c.action} for c in changes]},
                       content_type="application/json")
        elif method == "GET" and parts == ["deliveries"]:
            self._send(200, sandbox.sender.deliveries() if sandbox.sender else [], content_type="application/json")
        elif parts == ["faults"]:
            self._send(200, fault_settings(sandbox, self._json_object() if method == "POST" else None),
                       content_type="application/json")
        else:
            self._send(404, {"error": "unknown sandbox endpoint"}, content_type="application/json")
