"""Progress lines for long CLI work: records done, bytes read / total, rate."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    def __init__(self, label: str, total_bytes: int, *, stream: TextIO | None = None,
                 interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total_bytes = label, total_bytes
        self.stream = stream or sys.stderr
        self.interval, self.clock = interval, clock
        self.started = self.last = clock()

    def update(self, records: int, position: int, *, final: bool = False) -> None:
        now = self.clock()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        share = f"{100 * position / self.total_bytes:5.1f}%" if self.total_bytes else "  ?  "
        self.stream.write(
            f"{self.label}: {records:,} records, {share} of {_size(self.total_bytes)}, "
            f"{records / elapsed:,.0f} records/s{' — done' if final else ''}\n"
        )
        self.stream.flush()


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
