"""The operators' status page in headless Chromium (Debian's, driven by Playwright) at 1280×900 and
390×844: it renders, never scrolls sideways, shows each tenant's state in words and colour,
three 24-hour charts with labelled axes, coloured run statuses, exact times on hover, and
refreshes itself in place without losing the scroll position."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page
from sqlalchemy import insert

from devtools.localhost.serve import DEMO_TENANT, Booted
from shared.store.engine import write_transaction
from shared.store.schema import sync_runs
from tests.e2e.status_screenshots import VIEWPORTS, chromium, demo_with_history, screenshot

ROOT = Path(__file__).resolve().parents[2]
GREEN, AMBER, RED = (26, 127, 55), (154, 103, 0), (207, 34, 46)  # --ok, --warn, --bad


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def synced(database_url: str) -> Iterator[Booted]:
    with demo_with_history(database_url) as running:
        running.runtime.queues.send("changes-poison", '{"kind": "change"}')  # one message an operator must see
        yield running


def add_run(running: Booted, status: str, error: str | None = None) -> str:
    run_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    with write_transaction(running.runtime.engine) as conn:
        conn.execute(insert(sync_runs).values(id=run_id, tenant_id=DEMO_TENANT, kind="incremental", status=status,
                                              started_at=now, finished_at=now + timedelta(seconds=1), error=error))
    return run_id


def rgb(page: Page, selector: str, prop: str = "background-color") -> tuple[int, ...]:
    text = page.evaluate(f"getComputedStyle(document.querySelector({selector!r})).getPropertyValue({prop!r})")
    return tuple(int(float(x)) for x in text[text.index("(") + 1:text.index(")")].split(",")[:3])


@pytest.mark.parametrize("device", sorted(VIEWPORTS))
def test_the_status_page_reads_on_a_laptop_and_a_phone(browser: Browser, synced: Booted, device: str,
                                                        tmp_path: Path) -> None:
    width, height = VIEWPORTS[device]
    failed = add_run(synced, "failed", "source busy or failing (HTTP 503)")  # on time, but the last run failed
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        response = page.goto(f"{synced.host.url}/api/status")
        assert response is not None and response.status == 200
        assert response.headers["content-type"].startswith("text/html")
        card = page.locator(f'article.card[data-tenant="{DEMO_TENANT}"]')
        assert card.is_visible() and card.locator(".badge").inner_text() == "On time · last run failed"
        assert rgb(page, f'article[data-tenant="{DEMO_TENANT}"] .badge') == AMBER
        assert "Last run failed: source busy or failing" in card.inner_text()
        assert page.locator("#poison").inner_text() == "1"
        # Three charts, each titled, with a labelled y axis (its unit) and a labelled time axis.
        charts = card.locator("svg.chart")
        assert charts.count() == 3
        for n, unit in enumerate(("min", "/h", "s")):
            chart = charts.nth(n)
            assert (chart.locator(".chart-title").text_content() or "").endswith("24 h")
            assert (chart.locator(".axis-label.y").first.text_content() or "").endswith(unit)
            assert [t.text_content() for t in chart.locator(".tick").all()] == ["−24 h", "−12 h", "now"]
            assert chart.locator(".series, .dot").count() >= 1  # something drawn, not an empty frame
            box = chart.bounding_box()
            assert box is not None and box["width"] >= 200
        # Run statuses in colour, run ids shown (the whole id on hover), exact times on hover.
        assert rgb(page, ".runs .pill.failed") == RED and rgb(page, ".runs .pill.completed") == GREEN
        assert page.locator(f'.runs code[title="{failed}"]').inner_text() == failed[:8]
        exact = card.locator("time").first.get_attribute("title") or ""
        assert exact.startswith(str(datetime.now(UTC).year)) and exact.endswith(("AEDT", "AEST"))
        # Nothing wider than the screen: no sideways scrolling, the runs table included.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        box = card.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        assert float(page.evaluate("parseFloat(getComputedStyle(document.querySelector('dd')).fontSize)")) >= 12
        shot = Image.open(io.BytesIO(screenshot(browser, f"{synced.host.url}/api/status", device,
                                                tmp_path).read_bytes())).convert("RGB")
        assert shot.width == width and len(shot.getcolors(maxcolors=1 << 16) or []) > 20  # rendered, not blank
    finally:
        page.close()


def test_the_page_refreshes_in_place_and_keeps_the_scroll_position(browser: Browser, synced: Booted) -> None:
    width, height = VIEWPORTS["phone"]
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        page.goto(f"{synced.host.url}/api/status")
        assert page.evaluate("document.body.dataset.refreshSeconds") == "30"
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        scrolled = page.evaluate("window.scrollY")
        assert scrolled > height  # the phone layout is taller than the screen
        newest = add_run(synced, "completed")
        assert page.evaluate("window.refreshStatus()") is True  # what the 30 s timer calls
        assert page.locator(f'.runs code[title="{newest}"]').count() == 1  # the new content is in
        assert page.evaluate("window.scrollY") == scrolled  # and the reader stayed where they were
    finally:
        page.close()


def test_the_screenshot_command_writes_both_pictures(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tests.e2e.status_screenshots", str(tmp_path)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for device, (width, _height) in VIEWPORTS.items():
        assert Image.open(tmp_path / f"status-{device}.png").width == width
    assert not list(tmp_path.glob("*.db"))  # its scratch database is gone
