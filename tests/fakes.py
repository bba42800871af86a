"""Small fakes shared by tests."""
from __future__ import annotations


class ManualClock:
    """A clock that moves only when a test moves it: call it for the time, set ``now`` to advance."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def registered_functions() -> dict[str, object]:
    """function_app's functions by name, from the one per-process list the local host uses too."""
    import function_app
    from shared.blueprints.invoke import app_functions

    return {f.get_function_name(): f for f in app_functions(function_app.app)}
