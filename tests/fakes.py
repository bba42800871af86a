"""Small fakes shared by tests."""
from __future__ import annotations


class ManualClock:
    """A clock that moves only when a test moves it: call it for the time, set ``now`` to advance."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
