"""Small fakes shared by tests."""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class ManualClock:
    """A clock that moves only when a test moves it: call it for the time, set ``now`` to advance."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def registered_functions() -> dict[str, Any]:
    """function_app's functions by name, from the one per-process list the local host uses too."""
    import function_app
    from shared.blueprints.invoke import app_functions

    return {f.get_function_name(): f for f in app_functions(function_app.app)}


@contextmanager
def installed_runtime(database_url: str, tmp_path: Path, tenants: Sequence[Mapping[str, Any]], queues: Any,
                      **settings: Any) -> Iterator[Any]:
    """The function app's runtime with these tenants and queues, installed for the test's duration."""
    from shared.bootstrap import build_runtime, use_runtime
    from shared.settings import load_settings

    tenants_file = tmp_path / "tenants.json"
    tenants_file.write_text(json.dumps(tenants))
    runtime = build_runtime(load_settings(database_url=database_url, tenants_file=tenants_file, **settings),
                            queues=queues)
    use_runtime(runtime)
    try:
        yield runtime
    finally:
        use_runtime(None)
        runtime.engine.dispose()
