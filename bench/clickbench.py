"""Click -> panel-update latency in a real browser, over the whole real pipeline.

    python -m bench.clickbench [--clicks 60] [--json out/clicks.json]

Starts the embedded broker and Redis, the worker and the gateway (``connectors.local_stack``),
opens the demo storefront in headless Chromium (Debian's ``/usr/bin/chromium`` through
Playwright), and clicks products: five in one category, then five in the next, and so on.
Latency is measured inside the page, from the tracker's click handler to the moment the
"recommended for you" panel re-rendered (both ``performance.now()``), so it covers
browser -> collector -> Kafka -> dataflow -> Redis -> gateway -> SSE -> render. A click
after which the list did not change gets no update (the gateway sends only changes) and
is counted, not timed.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

__all__ = ["run", "main"]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def run(clicks: int = 60, chromium: str = "/usr/bin/chromium", wait_ms: int = 3000,
        seed: int = 1, out=sys.stdout) -> dict:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    from connectors.local_stack import shop_stack

    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-clickbench-"))
    latencies: list[float] = []
    unchanged = 0
    with shop_stack(workdir) as pipeline, sync_playwright() as pw:
        print(f"pipeline up; storefront {pipeline.gateway.storefront_url}", file=out)
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(pipeline.gateway.storefront_url)
        page.wait_for_function("() => window.__streamrec && window.__streamrec.ready && window.__streamrec.connected")
        categories = pipeline.categories
        for n in range(clicks):
            if n % 5 == 0:
                page.click(f"#categories button[data-cat='{categories[(n // 5) % len(categories)]}']")
            cards = page.locator("#grid .card")
            seen = page.evaluate("window.__streamrec.panelLog.length")
            cards.nth(rng.randrange(min(cards.count(), 24))).click()
            try:
                page.wait_for_function(f"() => window.__streamrec.panelLog.length > {seen}", timeout=wait_ms)
            except PlaywrightTimeout:
                unchanged += 1
                continue
            click_t = page.evaluate("window.__streamrec.tracked.filter(e => e.event.type === 'click').at(-1).t")
            update_t = page.evaluate(f"window.__streamrec.panelLog[{seen}].t")
            latencies.append(update_t - click_t)
            # A human pace, and room for the tracker's batched events (hover, impressions).
            time.sleep(0.15)
            if (n + 1) % 10 == 0:
                print(f"  {n + 1}/{clicks} clicks, p50 so far {np.percentile(latencies, 50):.0f} ms", file=out)
        browser.close()
    data = np.array(latencies) if latencies else np.array([float("nan")])
    report = {
        "clicks": clicks,
        "timed": len(latencies),
        "unchanged_lists": unchanged,
        "latency_ms": {"p50": round(float(np.percentile(data, 50)), 1),
                       "p95": round(float(np.percentile(data, 95)), 1),
                       "max": round(float(np.max(data)), 1),
                       "min": round(float(np.min(data)), 1)},
        "date": time.strftime("%Y-%m-%d"),
    }
    lat = report["latency_ms"]
    print(f"\nclick -> panel update over {len(latencies)} clicks ({unchanged} left the list unchanged): "
          f"p50 {lat['p50']} ms  p95 {lat['p95']} ms  max {lat['max']} ms", file=out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clickbench", description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=60)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    report = run(args.clicks, args.chromium)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
