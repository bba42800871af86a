"""Reading spec files: JSON, the pydantic model, then what the model alone cannot check.

Every problem is one line naming the file and the field, and no value is echoed. A bare name
("cliniko") is a spec bundled with the app (shared/rest/specs/); anything else is a path, read
relative to the tenants file's folder.
"""
from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.rest.spec import ENGINE_PLACEHOLDERS, Entity, SourceSpec, format_check, placeholders
from shared.settings_errors import SettingsError, validation_problems
from shared.store.catalog import BUILTIN_TABLES, RESERVED_COLUMNS, content_columns

BUNDLED = Path(__file__).resolve().parent / "specs"
UPDATED_AT_FORMATS = ("iso", "epoch", "epoch-ms")
FILTER_FORMATS = ("iso", "iso-offset", "date", "epoch")


def spec_path(reference: str, relative_to: Path | None) -> Path:
    if "/" not in reference and "\\" not in reference and not reference.endswith(".json"):
        return BUNDLED / f"{reference}.json"
    path = Path(reference)
    return path if path.is_absolute() or relative_to is None else relative_to / path


def load_spec(path: Path) -> SourceSpec:
    """The spec at ``path``, validated; a SettingsError lists every problem, one per line."""
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        raise SettingsError(f"spec {path}: cannot read ({exc.strerror})") from None
    return _load(path.resolve(), stamp)


@functools.lru_cache(maxsize=64)
def _load(path: Path, _stamp: int) -> SourceSpec:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"spec {path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise SettingsError(f"spec {path}: not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    try:
        spec = SourceSpec.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError("\n".join(f"spec {path}: {p}" for p in validation_problems(exc, raw, ("name",)))) from None
    problems = list(spec_problems(spec))
    if problems:
        raise SettingsError("\n".join(f"spec {path}: {p}" for p in problems))
    return spec


def spec_problems(spec: SourceSpec) -> Iterator[str]:
    """What a valid model may still get wrong: tables, columns, formats, templates, mappers."""
    allowed = ENGINE_PLACEHOLDERS | set(spec.variables)
    for i, entity in enumerate(spec.entities):
        where = f"entities[{i}](name={entity.name})"
        yield from (f"{where}.{p}" for p in _entity_problems(entity, allowed))
    if spec.webhook is not None and spec.entity(spec.webhook.entity).read is None \
            and spec.entity(spec.webhook.entity).updated_at is None and spec.webhook.timestamp is None:
        yield "webhook.timestamp: needed to order an event's payload against listings (the entity has no updated_at)"


def _entity_problems(entity: Entity, allowed: frozenset[str]) -> Iterator[str]:
    if isinstance(entity.table, str):
        if entity.table not in BUILTIN_TABLES:
            yield (f"table: {entity.table!r} is not a built-in table ({', '.join(sorted(BUILTIN_TABLES))}); "
                   "declare a table of your own as {\"name\": ...}")
        else:
            known = content_columns(entity.table)
            for column in entity.columns:
                if column not in known:
                    yield f"columns.{column}: {entity.table} has no such column ({', '.join(sorted(known))})"
    else:
        if entity.table.name in BUILTIN_TABLES:
            yield f"table.name: {entity.table.name!r} is a built-in table; give it by name as \"table\""
        for column in entity.columns:
            if column in RESERVED_COLUMNS:
                yield f"columns.{column}: reserved for the engine's own bookkeeping"
        for j, column in enumerate(entity.table.unique):
            if column not in entity.columns:
                yield f"table.unique[{j}]: {column!r} is not one of the entity's columns"
    if entity.updated_at is not None:
        yield from _format_problem("updated_at.format", entity.updated_at.format, UPDATED_AT_FORMATS)
    if entity.incremental is not None:
        yield from _format_problem("incremental.format", entity.incremental.format, FILTER_FORMATS)
        if "{since}" not in entity.incremental.template:
            yield "incremental.template: must contain {since}"
        if entity.incremental.until_param is not None and "{until}" not in entity.incremental.until_template:
            yield "incremental.until_template: must contain {until}"
    for column_name, mapping in entity.columns.items():
        if mapping.format is not None:
            yield from _format_problem(f"columns.{column_name}.format", mapping.format, ())
    for label, template in (("list", entity.listing), ("read", entity.read)):
        if template is None:
            continue
        unknown = placeholders([template.path, template.query, template.body]) - allowed
        if unknown:
            yield (f"{label}: unknown placeholder(s) {', '.join('{' + u + '}' for u in sorted(unknown))}; "
                   f"known: {', '.join(sorted(allowed))} (declare tenant values under \"variables\")")
    if entity.read is not None and "{id}" not in entity.read.path:
        yield "read.path: must contain {id}"
    if entity.mapper is not None:
        try:
            mapper_function(entity.mapper)
        except (ImportError, AttributeError, TypeError) as exc:
            yield f"mapper: cannot use {entity.mapper!r} ({exc.__class__.__name__})"


def _format_problem(where: str, fmt: str, named: tuple[str, ...]) -> Iterator[str]:
    if fmt in named:
        return
    try:
        format_check(fmt)
    except ValueError:
        yield f"{where}: expected {', '.join(repr(n) for n in named) + ' or ' if named else ''}a strftime format"


def mapper_function(reference: str) -> Callable[..., Any]:
    module, _, name = reference.partition(":")
    function = getattr(importlib.import_module(module), name)
    if not callable(function):
        raise TypeError(reference)
    return function
