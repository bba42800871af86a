"""The app's side of the harness: the host process (python -m bench.faults host) and what it watches from inside."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable

import httpx

from bench.faults.parts import HOST_JSON
from shared.settings import load_settings
from shared.source.retry import parse_retry_after


def serve_host(port: int) -> None:
    """``python -m bench.faults host``: the app on the local host, as the harness configures it."""
    from devtools.localhost.serve import boot

    # The reconcile engine's lines (a full run's second listing: outcome=listing-again) go to the
    # host's log, where the harness counts them; the rest of the app stays at WARNING.
    sync_log = logging.getLogger("shared.sync")
    sync_log.setLevel(logging.INFO)
    sync_log.addHandler(logging.StreamHandler(sys.stderr))
    booted = boot(load_settings(), port=port, say=lambda _m: None, host_json=HOST_JSON, transport=hold_watch())
    booted.host.submit(_report_loop_lag())
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    booted.stop()


LOOP_LAG_REPORTED = 0.25  # seconds


async def _report_loop_lag() -> None:
    """Print (to the host's log) each time the host's event loop ran a timer late by more than
    LOOP_LAG_REPORTED: everything on that loop (source requests, their answers) waited as long.
    The wall clock, to match the harness's notes of the same moment."""
    while True:
        asked = time.monotonic()
        await asyncio.sleep(0.05)
        late = time.monotonic() - asked - 0.05
        if late > LOOP_LAG_REPORTED:
            print(f"event loop late by {late:.2f} s, until {time.time():.2f}", flush=True)


SENT_INSIDE = "sent inside a Retry-After"


class HoldWatch(httpx.AsyncBaseTransport):
    """In the host process: print (to the host's log) every source request the app sends after a
    429 has reached it and before the Retry-After it named has passed. This is the storm's check
    seen from the app's side, where lateness on the way (a loaded machine delays requests already
    sent, and the 429 on its way back) cannot blur it: it allows no grace at all. The runtime is
    given this transport (around httpx's own); it changes nothing the app sends."""

    def __init__(self, inner: httpx.AsyncBaseTransport, holds: dict[str, list[tuple[float, float]]],
                 lock: threading.Lock) -> None:
        self.inner, self.holds, self.lock = inner, holds, lock  # holds: origin → (429 received, until)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin, now = request.url.netloc.decode(), time.monotonic()
        with self.lock:
            mine = self.holds[origin] = [(got, until) for got, until in self.holds.get(origin, []) if until > now]
            inside = [(got, until) for got, until in mine if got < now < until - 0.05]
        if inside and request.method == "GET":  # the token endpoint is not throttled
            got, until = inside[0]
            print(f"{SENT_INSIDE}: {origin} {request.url.path} {now - got:.3f} s after the 429 reached "
                  f"the app, {until - now:.1f} s before it ended", flush=True)
        response = await self.inner.handle_async_request(request)
        if response.status_code == 429:
            seconds = parse_retry_after(response.headers.get("retry-after"), time.time())
            if seconds:
                received = time.monotonic()
                with self.lock:
                    self.holds.setdefault(origin, []).append((received, received + seconds))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def hold_watch(inner: Callable[[], httpx.AsyncBaseTransport] = httpx.AsyncHTTPTransport
               ) -> Callable[[], HoldWatch]:
    """A transport factory for the runtime (one per event loop), all sharing one record of holds."""
    holds: dict[str, list[tuple[float, float]]] = {}
    lock = threading.Lock()
    return lambda: HoldWatch(inner(), holds, lock)
