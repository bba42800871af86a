"""Progress lines for long CLI work on stderr: records done, of how many, rate, and ETA."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class _Throttled:
    def __init__(self, label: str, *, stream: TextIO | None, interval: float, clock: Callable[[], float]) -> None:
        self.label, self.stream = label, stream or sys.stderr
        self.interval, self.clock = interval, clock
        self.started = self.last = clock()

    def _due(self, final: bool) -> float | None:
        """Seconds elapsed when a line is due now, else None."""
        now = self.clock()
        if not final and now - self.last < self.interval:
            return None
        self.last = now
        return max(now - self.started, 1e-9)

    def _write(self, text: str, final: bool) -> None:
        self.stream.write(f"{self.label}: {text}{' — done' if final else ''}\n")
        self.stream.flush()


class Progress(_Throttled):
    """For a file read as a stream: records so far and the share of the file's bytes."""

    def __init__(self, label: str, total_bytes: int, *, stream: TextIO | None = None, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(label, stream=stream, interval=interval, clock=clock)
        self.total_bytes = total_bytes

    def update(self, records: int, position: int, *, final: bool = False) -> None:
        elapsed = self._due(final)
        if elapsed is None:
            return
        share = f"{100 * position / self.total_bytes:5.1f}%" if self.total_bytes else "  ?  "
        self._write(f"{records:,} records, {share} of {_size(self.total_bytes)}, {records / elapsed:,.0f} records/s",
                    final)


class CountProgress(_Throttled):
    """For work whose total is known (or learnt on the way): done / total, rate, ETA."""

    def __init__(self, label: str, *, stream: TextIO | None = None, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(label, stream=stream, interval=interval, clock=clock)

    def update(self, done: int, total: int | None, step: str = "", *, final: bool = False) -> None:
        elapsed = self._due(final)
        if elapsed is None:
            return
        rate = done / elapsed
        of = f" / {total:,} ({100 * done / total:.0f}%)" if total else ""
        eta = f", ETA {_clock(max(total - done, 0) / rate)}" if total and rate > 0 and not final else ""
        self._write(f"{done:,}{of} records, {rate:,.0f} records/s{eta}{f' [{step}]' if step else ''}", final)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)
