"""The operators' status page in headless Chromium (Debian's, driven by Playwright): it renders
on a laptop and on a phone, shows each tenant's state in words and colour, and never overflows."""
from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, sync_playwright

from shared.localhost.serve import DEMO_TENANT, Booted, boot, enqueue_reconcile, wait_for_run
from shared.settings import load_settings

CHROMIUM = Path("/usr/bin/chromium")
# As root on a closed network: no sandbox, and none of Chromium's background connections.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
VIEWPORTS = {"laptop": (1280, 800), "phone": (390, 844)}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make test` installs it (make system-deps)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def synced(database_url: str) -> Iterator[Booted]:
    running = boot(load_settings(database_url=database_url, fanout_schedule="0 0 0 1 1 *"), port=0,
                   say=lambda line: None, demo_counts=(3, 60, 300, 60))
    started = datetime.now(timezone.utc)
    enqueue_reconcile(running.runtime.queues, DEMO_TENANT, "full")
    assert wait_for_run(running.runtime.engine, DEMO_TENANT, "full", started, timeout=120) == "completed"
    running.runtime.queues.send("changes-poison", '{"kind": "change"}')  # one message an operator must see
    yield running
    running.stop()


@pytest.mark.parametrize("device", sorted(VIEWPORTS))
def test_the_status_page_reads_on_a_laptop_and_a_phone(browser: Browser, synced: Booted, device: str,
                                                        tmp_path: Path) -> None:
    width, height = VIEWPORTS[device]
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        response = page.goto(f"{synced.host.url}/api/status")
        assert response is not None and response.status == 200
        assert response.headers["content-type"].startswith("text/html")
        card = page.locator(f'article.card[data-tenant="{DEMO_TENANT}"]')
        assert card.is_visible() and card.locator(".badge").inner_text() == "On time"
        assert "full · completed" in card.inner_text()
        assert page.locator("#poison").inner_text() == "1"
        assert page.locator("tbody tr").count() == 1  # the one run
        # Nothing wider than the screen (the runs table scrolls inside its own box), text readable.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        box = card.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        assert float(page.evaluate("parseFloat(getComputedStyle(document.querySelector('dd')).fontSize)")) >= 12
        shot = page.screenshot(full_page=True)
        (tmp_path / f"status-{device}.png").write_bytes(shot)
        image = Image.open(io.BytesIO(shot)).convert("RGB")
        assert image.width == width and image.height >= height * 0.5
        assert len(image.getcolors(maxcolors=1 << 16) or []) > 20  # rendered, not a blank page
        badge = card.locator(".badge").bounding_box()
        assert badge is not None
        red, green, blue = image.getpixel((int(badge["x"] + 3), int(badge["y"] + badge["height"] / 2)))
        assert green > red + 40 and green > blue + 40  # the on-time badge is green
    finally:
        page.close()
