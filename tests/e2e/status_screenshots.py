"""Screenshots of the status page for docs/img: the demo tenant after a real full sync and a
burst of webhooks, on top of a day of **synthetic** run history (runs and hourly webhook counts
written straight into the database, so the 24-hour charts have something to show).

    PYTHONPATH=. .venv/bin/python -m tests.e2e.status_screenshots docs/img

tests/e2e/test_status_page.py drives the same functions, so this command is tested as it runs.
"""
from __future__ import annotations

import random
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import Engine, insert

from devtools.localhost.serve import DEMO_TENANT, Booted, boot, enqueue_reconcile, wait_for_run
from shared.metrics import hour_bucket
from shared.settings import load_settings
from shared.store.engine import write_transaction
from shared.store.metrics import increment
from shared.store.schema import sync_runs

CHROMIUM = Path("/usr/bin/chromium")
# As root on a closed network: no sandbox, and none of Chromium's background connections.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
VIEWPORTS = {"laptop": (1280, 900), "phone": (390, 844)}


@contextmanager
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        raise SystemExit("Debian's chromium is missing: `make test` installs it (make system-deps)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def seed_a_day(engine: Engine, tenant_id: str, now: datetime, seed: int = 7) -> int:
    """A day of runs before ``now`` (incremental every 15 min, hot every 5, two failures) and
    webhooks per hour with a daytime peak; returns the runs written."""
    rng = random.Random(seed)
    rows = []
    for minutes in range(24 * 60, 5, -5):
        started = now - timedelta(minutes=minutes)
        kind = "incremental" if minutes % 15 == 0 else "hot"
        status = "failed" if minutes in (17 * 60, 17 * 60 - 15) else "completed"
        seconds = rng.uniform(0.4, 2.5) if kind == "hot" else rng.uniform(1.5, 6.0)
        rows.append({"id": str(uuid.uuid4()), "tenant_id": tenant_id, "kind": kind, "status": status,
                     "started_at": started, "finished_at": started + timedelta(seconds=seconds),
                     "processed": rng.randrange(0, 40), "error": "source busy or failing (HTTP 503)" if
                     status == "failed" else None})
    with write_transaction(engine) as conn:
        conn.execute(insert(sync_runs), rows)
        for hours_ago in range(1, 24):
            at = now - timedelta(hours=hours_ago)
            local_hour = (at.hour + 11) % 24  # Sydney: busy in the day, quiet at night
            busy = 8 <= local_hour <= 18
            increment(conn, {(tenant_id, hour_bucket(at)): rng.randrange(120, 260) if busy else rng.randrange(0, 25)},
                      at)
    return len(rows)


@contextmanager
def demo_with_history(database_url: str) -> Iterator[Booted]:
    """The local host with the demo tenant: a day of synthetic history, then a real full sync and
    real webhooks from the sandbox."""
    running = boot(load_settings(database_url=database_url, fanout_schedule="0 0 0 1 1 *"), port=0,
                   say=lambda line: None, demo_counts=(3, 60, 300, 60))
    try:
        now = datetime.now(UTC)
        seed_a_day(running.runtime.engine, DEMO_TENANT, now - timedelta(minutes=2))
        enqueue_reconcile(running.runtime.queues, DEMO_TENANT, "full")
        assert wait_for_run(running.runtime.engine, DEMO_TENANT, "full", now, timeout=120) == "completed"
        assert running.demo is not None
        running.demo.churn(creates=5, updates=20, deletes=2)
        running.demo.sandbox.notifier.drain(timeout=60)
        running.host.wait_idle(timeout=60)
        running.runtime.metrics.flush(running.runtime.engine)
        yield running
    finally:
        running.stop()


def screenshot(browser: Browser, url: str, device: str, out: Path) -> Path:
    width, height = VIEWPORTS[device]
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        page.goto(url)
        path = out / f"status-{device}.png"
        path.write_bytes(page.screenshot(full_page=device == "phone"))
        return path
    finally:
        page.close()


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs/img")
    out.mkdir(parents=True, exist_ok=True)
    database = out.resolve() / ".screenshots.db"
    database.unlink(missing_ok=True)
    try:
        with demo_with_history(f"sqlite:///{database}") as running, chromium() as browser:
            for device in VIEWPORTS:
                print(f"wrote {screenshot(browser, f'{running.host.url}/api/status', device, out)}")
    finally:
        database.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
