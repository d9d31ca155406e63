"""End to end in a real headless browser (Debian's chromium, driven by Playwright):
browser -> collector -> Kafka -> dataflow -> Redis -> gateway -> browser.

Open the storefront, click products of one category, and the "recommended for you"
panel must show that category's items within 2 seconds of the click, never the product
just opened (the page passes it to the gateway as ``exclude=``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter

import httpx
import orjson
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
            # The product in view is left out of the panel.
            assert page.evaluate("window.__streamrec.viewing") == clicked[-1]
            assert clicked[-1] not in update["items"], (clicked[-1], update)
        assert max(delays) < DEADLINE_MS, delays
        # The panel after the last click: mostly this category, and not only what was clicked.
        final = page.evaluate("window.__streamrec.panelLog.at(-1)")
        assert clicked[-1] not in final["items"], final
        assert clicked[-1] not in page.locator("#recs li").evaluate_all("els => els.map(e => e.dataset.itemId)")
        counts = Counter(final["categories"])
        assert counts.most_common(1)[0][0] == category, final
        assert counts[category] >= len(final["categories"]) // 2, final
        recommended = [i for i, c in zip(final["items"], final["categories"])
                       if c == category and i not in clicked]
        assert recommended, f"only the clicked items came back: {final}"
        shown = page.locator("#recs li").evaluate_all("els => els.map(e => e.dataset.category)")
        assert Counter(shown)[category] == counts[category]
        # Every listed item says why it is there, in words.
        reasons = page.locator("#recs li .why").all_inner_texts()
        assert len(reasons) == len(shown) and all(reasons), reasons
        # The tracker reported what the panel showed, with the list's rec_id.
        page.wait_for_function("() => window.__streamrec.tracked.some(e => e.event.type === 'impression'"
                               " && e.event.context.rec_id)", timeout=5000)
        assert not errors, errors
    finally:
        page.close()


def _accepted(health: str) -> int:
    return httpx.get(health).json()["collector"]["accepted"]


def _wait_accepted(health: str, want: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while _accepted(health) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    return _accepted(health)


def test_consent_off_tells_the_server_then_no_events_leave_the_page(browser, pipeline):
    page, errors = _open(browser, pipeline)
    health = f"{pipeline.gateway.url}/healthz"
    consents = "window.__streamrec.tracked.filter(e => e.event.type === 'consent').map(e => e.event)"
    try:
        page.locator("#grid .card").nth(0).click()
        _wait_accepted(health, _accepted(health) + 1)
        time.sleep(2.5)  # the batched events (impressions) have left too
        start = _accepted(health)
        page.uncheck("#consent")
        # The withdrawal itself is sent (with the user's token: consent needs it) ...
        assert _wait_accepted(health, start + 1) == start + 1
        (off,) = page.evaluate(consents)
        assert (off["type"], off["value"], off["user_id"]) == ("consent", 0, page.evaluate("window.__streamrec.user"))
        # ... and nothing after it.
        page.locator("#grid .card").nth(1).click()
        page.locator("#grid .card [data-track='add_to_cart']").nth(1).click()
        time.sleep(2.5)  # longer than the tracker's batching interval
        assert _accepted(health) == start + 1
        assert page.evaluate("window.__streamrec.tracked.filter(e => e.event.type === 'click').length") == 1
        page.check("#consent")
        assert [e["value"] for e in page.evaluate(consents)] == [0, 1]
        page.locator("#grid .card [data-track='add_to_cart']").nth(1).click()
        assert _wait_accepted(health, start + 3) >= start + 3  # consent 1, then the cart event
        # The worker took the withdrawal: the user's profile was erased and rebuilt from
        # the events after consent came back (the first click is forgotten).
        clicked = page.locator("#grid .card").nth(0).get_attribute("data-item-id")
        user = page.evaluate("window.__streamrec.user")
        deadline, profile = time.monotonic() + 10, None
        while time.monotonic() < deadline:
            raw = pipeline.redis.get(pipeline.keys.profile(user))
            profile = orjson.loads(raw) if raw else None
            if profile and profile["counts"].get("add_to_cart"):
                break
            time.sleep(0.1)
        assert profile and profile["counts"].get("add_to_cart"), profile
        assert clicked not in profile["recent_items"] and not profile["counts"].get("click"), profile
        assert not errors, errors
    finally:
        page.close()
