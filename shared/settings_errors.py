"""SettingsError and the way a validation error becomes lines naming fields (never values)."""
from __future__ import annotations

from pydantic import ValidationError


class SettingsError(ValueError):
    """Invalid configuration. The message names each bad field and never echoes its value."""


NAMING_KEYS = ("id", "name")


def describe_validation_error(exc: ValidationError, raw: object = None) -> str:
    """Field paths and messages only: pydantic's default text echoes input values (secrets)."""
    return "; ".join(validation_problems(exc, raw))


def validation_problems(exc: ValidationError, raw: object = None, keys: tuple[str, ...] = NAMING_KEYS,
                        at: tuple[int | str, ...] = ()) -> list[str]:
    """One ``field.path: message`` per problem, never the value (it may be a secret); a list
    item is named by the first of ``keys`` it has. ``at``: where in ``raw`` the validated part sits."""
    return [f"{_field_path((*at, *error['loc']), raw, keys)}: {error['msg']}"
            for error in exc.errors(include_input=False, include_context=False, include_url=False)]


def _field_path(loc: tuple[int | str, ...], raw: object, keys: tuple[str, ...]) -> str:
    # Name a list item (a tenant, an entity) by its id or name rather than its index where readable.
    path: list[str] = []
    node = raw
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
            key = next((k for k in keys if isinstance(node, dict) and isinstance(node.get(k), str)), None)
            path.append(f"[{part}]" + (f"({key}={node[key]})" if key and isinstance(node, dict) else ""))
            continue
        node = node.get(part) if isinstance(node, dict) else None
        path.append(f".{part}" if path else str(part))
    return "".join(path) or "(root)"
