"""Call a registered function the way the Functions host does, from plain values.

The local host (devtools.localhost) owns sockets, clocks and queues but never touches
azure.functions; this module turns its plain requests into ``func.HttpRequest``,
``func.QueueMessage`` and ``func.TimerRequest`` and the function's answer back into plain
values. Coroutine functions are handed to ``run`` (the host's event loop).
"""
from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

Runner = Callable[[Awaitable[Any]], Any]


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    trigger: dict[str, Any]  # the trigger binding as function.json has it
    user_function: Callable[..., Any]

    @property
    def kind(self) -> str:
        return str(self.trigger["type"])


@dataclass(frozen=True)
class PlainResponse:
    status: int
    headers: dict[str, str]
    body: bytes


_FUNCTIONS: dict[int, list[Any]] = {}


def app_functions(app: Any) -> list[Any]:
    """``app.get_functions()``, once per app: azure-functions re-registers blueprints on every
    call (a second call fails on duplicate names), so everyone in the process shares this list."""
    if id(app) not in _FUNCTIONS:
        _FUNCTIONS[id(app)] = app.get_functions()
    return _FUNCTIONS[id(app)]


def function_index(app: Any) -> dict[str, FunctionSpec]:
    """The app's functions by name, with their trigger binding as function.json has it."""
    index = {}
    for function in app_functions(app):
        bindings = json.loads(function.get_function_json())["bindings"]
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        index[function.get_function_name()] = FunctionSpec(function.get_function_name(), trigger,
                                                           function.get_user_function())
    return index


def _call(spec: FunctionSpec, argument: Any, run: Runner) -> Any:
    result = spec.user_function(**{spec.trigger["name"]: argument})
    return run(result) if inspect.isawaitable(result) else result


def call_http(spec: FunctionSpec, run: Runner, *, method: str, url: str, headers: Mapping[str, str],
              params: Mapping[str, str], route_params: Mapping[str, str], body: bytes) -> PlainResponse:
    request = func.HttpRequest(method, url, headers=dict(headers), params=dict(params),
                               route_params=dict(route_params), body=body)
    response = _call(spec, request, run)
    if not isinstance(response, func.HttpResponse):
        raise TypeError(f"function {spec.name} returned {type(response).__name__}, not an HttpResponse")
    out_headers = dict(response.headers)
    out_headers.setdefault("Content-Type", response.mimetype or "text/plain")
    return PlainResponse(response.status_code, out_headers, response.get_body() or b"")


def call_queue(spec: FunctionSpec, run: Runner, *, message_id: str, text: str, dequeue_count: int) -> None:
    # The worker's own message class (azure.functions.queue), which carries the dequeue count.
    _call(spec, QueueMessage(id=message_id, body=text.encode(), dequeue_count=dequeue_count), run)


def call_timer(spec: FunctionSpec, run: Runner, *, past_due: bool) -> None:
    _call(spec, TimerRequest(past_due=past_due), run)  # the worker's concrete class, as with queues
