"""Small fakes shared by tests."""
from __future__ import annotations


class ManualClock:
    """A clock that moves only when a test moves it: call it for the time, set ``now`` to advance."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def registered_functions() -> dict[str, object]:
    """function_app's functions by name. azure-functions re-registers blueprints on every
    get_functions() call (a second call fails on duplicate names), so it is called once."""
    global _FUNCTIONS
    if _FUNCTIONS is None:
        import function_app

        _FUNCTIONS = {f.get_function_name(): f for f in function_app.app.get_functions()}
    return _FUNCTIONS


_FUNCTIONS: dict[str, object] | None = None
