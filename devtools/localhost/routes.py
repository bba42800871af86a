"""Azure Functions route templates (``webhooks/{tenant}/{event}``) matched against request paths.

Pure. Supported: literal segments, ``{name}``, ``{name:constraint}`` (constraint ignored but for
``int``), optional ``{name?}`` as the last segment and catch-all ``{*name}``. More literal
segments win, as in ASP.NET routing.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote

_PARAMETER = re.compile(r"^\{(\*)?([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?(\?)?\}$")

T = TypeVar("T")


@dataclass(frozen=True)
class Route:
    template: str
    pattern: re.Pattern[str]
    literals: int

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        if found is None:
            return None
        return {k: unquote(v) for k, v in found.groupdict().items() if v is not None}


def compile_route(template: str) -> Route:
    parts, literals = [], 0
    for segment in template.strip("/").split("/"):
        parameter = _PARAMETER.match(segment)
        if parameter is None:
            if "{" in segment or "}" in segment:
                raise ValueError(f"route {template!r}: unsupported segment {segment!r}")
            parts.append("/" + re.escape(segment))
            literals += 1
            continue
        catch_all, name, constraint, optional = parameter.groups()
        value = r"[^/]+" if not catch_all else r".*"
        if constraint == "int":
            value = r"-?[0-9]+"
        parts.append(f"(?:/(?P<{name}>{value}))?" if optional or catch_all else f"/(?P<{name}>{value})")
    return Route(template, re.compile("^" + "".join(parts) + "/?$"), literals)


def best_match(routes: Sequence[tuple[Route, T]], path: str) -> tuple[T, dict[str, str]] | None:
    """The most specific route matching ``path`` (without the route prefix)."""
    for route, target in sorted(routes, key=lambda r: -r[0].literals):
        params = route.match(path)
        if params is not None:
            return target, params
    return None
