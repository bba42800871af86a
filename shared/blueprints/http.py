"""What every HTTP function shares: JSON answers with a machine-readable error, the tenant from
the route, request bodies read within limits, and a 503 when storage fails (a bug stays a 500)."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import azure.functions as func
from pydantic import BaseModel, ValidationError

from shared.availability import is_unavailable
from shared.bootstrap import Runtime, runtime
from shared.settings import SettingsError, TenantConfig

log = logging.getLogger("shared.functions")
M = TypeVar("M", bound=BaseModel)
MAX_BODY = 4096


class Refused(Exception):
    """A request answered with a 4xx: ``status`` and a body with ``error``."""

    def __init__(self, code: int, error: str, /, **detail: Any) -> None:
        super().__init__(error)
        self.status, self.body = code, {"error": error, **detail}


def answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, headers=headers or {},
                             mimetype="application/json")


def unavailable(route: str, exc: Exception) -> func.HttpResponse:
    if isinstance(exc, SettingsError):  # its message names the setting to fix and never a value
        log.error("http route=%s outcome=unavailable reason=SettingsError: %s", route, exc)
    else:
        log.error("http route=%s outcome=unavailable reason=%s", route, exc.__class__.__name__)
    return answer(503, {"error": "temporarily-unavailable"}, {"Retry-After": "5"})


def refused_or_unavailable(route: str, exc: Exception) -> func.HttpResponse:
    """The answer for what a function raised: its 4xx when it refused, a 503 when storage did not
    answer. Anything else is a bug, re-raised: the host answers 500 and logs its traceback (a 503
    would send the caller to retry what can never work, and hide the bug)."""
    if isinstance(exc, Refused):
        return answer(exc.status, exc.body)
    if is_unavailable(exc):
        return unavailable(route, exc)
    raise exc


Handler = Callable[[Runtime, func.HttpRequest], func.HttpResponse]


def http_function(name: str) -> Callable[[Handler], Callable[[func.HttpRequest], func.HttpResponse]]:
    """What every HTTP function shares, in one place: the process's runtime passed to the handler,
    a refusal answered with its 4xx, storage that did not answer with a 503 (logged as ``name``),
    anything else raised for the host's 500 with its traceback."""
    def adapt(handler: Handler) -> Callable[[func.HttpRequest], func.HttpResponse]:
        def function(req: func.HttpRequest) -> func.HttpResponse:
            try:
                return handler(runtime(), req)
            except Exception as exc:
                return refused_or_unavailable(name, exc)

        # Not functools.wraps: the Functions library reads this function's parameters (``req``,
        # the binding's name), and wraps would show it the handler's through __wrapped__.
        function.__name__, function.__qualname__ = handler.__name__, handler.__qualname__
        function.__doc__, function.__module__ = handler.__doc__, handler.__module__
        return function
    return adapt


def query_limit(req: func.HttpRequest, *, default: int, maximum: int) -> int:
    """The ``limit`` query parameter: an integer from 1 to ``maximum``, else 400 bad-limit."""
    raw = req.params.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= maximum):
        raise Refused(400, "bad-limit", expected=f"an integer from 1 to {maximum}")
    return int(raw)


def route_tenant(rt: Runtime, req: func.HttpRequest) -> TenantConfig:
    tenant = rt.tenants.get(req.route_params.get("tenant", ""))
    if tenant is None:
        raise Refused(404, "unknown-tenant")
    return tenant


def json_body(req: func.HttpRequest, model: type[M]) -> M:
    """The body as ``model``: 413 over MAX_BODY, 415 unless JSON, 400 naming the bad fields."""
    body = req.get_body() or b""
    if len(body) > MAX_BODY:
        raise Refused(413, "body-too-large", limit=MAX_BODY)
    if req.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise Refused(415, "unsupported-media-type", expected="application/json")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise Refused(400, "invalid-json") from None
        # What each field must be (e.g. "Input should be 'incremental', 'hot' or 'full'"): the
        # messages describe the field, never echo the value sent.
        problems = {".".join(str(p) for p in e["loc"]) or "body": e["msg"] for e in errors}
        raise Refused(400, "bad-body", fields=sorted(problems), problems=problems) from None
