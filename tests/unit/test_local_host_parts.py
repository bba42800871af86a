"""The local host's pure parts: route templates, host.json timespans, %SETTING% resolution."""
from __future__ import annotations

import pytest

from devtools.localhost.host import resolve_setting, timespan_seconds
from devtools.localhost.routes import best_match, compile_route
from shared.settings import load_settings


def test_route_templates_match_as_the_functions_host_does() -> None:
    route = compile_route("webhooks/{tenant}/{event}")
    assert route.match("/webhooks/demo/appointment-update") == {"tenant": "demo", "event": "appointment-update"}
    assert route.match("/webhooks/demo/appointment-update/") == {"tenant": "demo", "event": "appointment-update"}
    assert route.match("/webhooks/demo") is None and route.match("/webhooks/a/b/c") is None
    assert route.match("/webhooks/de%20mo/x") == {"tenant": "de mo", "event": "x"}
    assert compile_route("runs/{id:int}").match("/runs/12") == {"id": "12"}
    assert compile_route("runs/{id:int}").match("/runs/x") is None
    assert compile_route("files/{*rest}").match("/files/a/b") == {"rest": "a/b"}
    assert compile_route("items/{id?}").match("/items") == {}
    with pytest.raises(ValueError, match="unsupported segment"):
        compile_route("a/b{c}")


def test_literal_segments_win_over_parameters() -> None:
    routes = [(compile_route("tenants/{tenant}/sync"), "param"), (compile_route("tenants/all/sync"), "literal")]
    assert best_match(routes, "/tenants/all/sync") == ("literal", {})
    assert best_match(routes, "/tenants/t1/sync") == ("param", {"tenant": "t1"})
    assert best_match(routes, "/nothing") is None


def test_host_json_timespans_and_app_settings() -> None:
    assert timespan_seconds("00:10:00", 1) == 600 and timespan_seconds("00:00:02.5", 1) == 2.5
    assert timespan_seconds(None, 7) == 7
    settings = load_settings(fanout_schedule="*/10 * * * * *")
    assert resolve_setting("%SYNC_FANOUT_SCHEDULE%", settings) == "*/10 * * * * *"
    assert resolve_setting("0 */5 * * * *", settings) == "0 */5 * * * *"
    with pytest.raises(LookupError, match="app setting SYNC_NOPE is not a known setting"):
        resolve_setting("%SYNC_NOPE%", settings)
