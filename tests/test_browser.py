"""End to end in a real headless browser (Debian's chromium, driven by Playwright):
browser -> collector -> Kafka -> dataflow -> Redis -> gateway -> browser.

Open the storefront, click products of one category, and the "recommended for you"
panel must show that category's items within 2 seconds of the click.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter

import httpx
import pytest

from connectors.local_stack import shop_stack

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("STREAMREC_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google on a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DEADLINE_MS = 2000


@pytest.fixture(scope="module")
def pipeline(kafka, redis_server, tmp_path_factory):
    with shop_stack(tmp_path_factory.mktemp("browser"), bootstrap=kafka.bootstrap, redis_url=redis_server.url) as p:
        yield p


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package (as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # Playwright gives every launch a new, empty --user-data-dir.
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, pipeline):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(pipeline.gateway.storefront_url)
    page.wait_for_function("() => window.__streamrec && window.__streamrec.ready && window.__streamrec.connected",
                           timeout=10_000)
    return page, errors


def _click_and_wait_for_panel(page, card) -> tuple[dict, dict]:
    """Click ``card``; returns (the tracked click event, the first panel update after it)."""
    seen = page.evaluate("window.__streamrec.panelLog.length")
    card.click()
    page.wait_for_function(f"() => window.__streamrec.panelLog.length > {seen}", timeout=DEADLINE_MS + 3000)
    click = page.evaluate("window.__streamrec.tracked.filter(e => e.event.type === 'click').at(-1)")
    update = page.evaluate(f"window.__streamrec.panelLog[{seen}]")
    return click, update


def test_clicking_one_category_fills_the_panel_with_it_within_2s(browser, pipeline):
    category = max(pipeline.categories, key=lambda c: len(pipeline.items_of(c)))
    page, errors = _open(browser, pipeline)
    try:
        page.click(f"#categories button[data-cat='{category}']")
        cards = page.locator("#grid .card")
        assert cards.count() >= 6
        clicked, delays = [], []
        for n in (0, 2, 4):
            click, update = _click_and_wait_for_panel(page, cards.nth(n))
            clicked.append(click["event"]["item_id"])
            assert click["event"]["category"] == category
            delays.append(update["t"] - click["t"])
        assert max(delays) < DEADLINE_MS, delays
        # The panel after the last click: mostly this category, and not only what was clicked.
        final = page.evaluate("window.__streamrec.panelLog.at(-1)")
        counts = Counter(final["categories"])
        assert counts.most_common(1)[0][0] == category, final
        assert counts[category] >= len(final["categories"]) // 2, final
        recommended = [i for i, c in zip(final["items"], final["categories"])
                       if c == category and i not in clicked]
        assert recommended, f"only the clicked items came back: {final}"
        shown = page.locator("#recs li").evaluate_all("els => els.map(e => e.dataset.category)")
        assert Counter(shown)[category] == counts[category]
        # The tracker reported what the panel showed, with the list's rec_id.
        page.wait_for_function("() => window.__streamrec.tracked.some(e => e.event.type === 'impression'"
                               " && e.event.context.rec_id)", timeout=5000)
        assert not errors, errors
    finally:
        page.close()


def test_no_events_leave_the_page_when_consent_is_off(browser, pipeline):
    page, errors = _open(browser, pipeline)
    health = f"{pipeline.gateway.url}/healthz"
    try:
        page.uncheck("#consent")
        before = httpx.get(health).json()["collector"]["accepted"]
        page.locator("#grid .card").nth(1).click()
        page.locator("#grid .card [data-track='add_to_cart']").nth(1).click()
        time.sleep(2.5)  # longer than the tracker's batching interval
        assert httpx.get(health).json()["collector"]["accepted"] == before
        assert page.evaluate("window.__streamrec.tracked.filter(e => e.event.type === 'click').length") == 0
        page.check("#consent")
        page.locator("#grid .card [data-track='add_to_cart']").nth(1).click()
        deadline = time.monotonic() + 5
        while httpx.get(health).json()["collector"]["accepted"] == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(health).json()["collector"]["accepted"] > before
        assert not errors, errors
    finally:
        page.close()
