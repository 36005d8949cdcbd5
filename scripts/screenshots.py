"""Screenshots of every tab of the workbench (docs/screenshots/<tab>.png), from a finished run.

    python scripts/screenshots.py --runs runs [--run RUN_ID] [--out docs/screenshots]

Starts `python -m app` on a free local port over the runs folder (no demo run is started, see
app/server.py), opens it in Debian's chromium through Playwright (never a downloaded browser), picks
the run (default: the app's own choice, a running run or the newest), waits in each tab for its first
content (app.server.FIRST_CONTENT, what tests/test_app_first_sight.py checks too) and saves one PNG a tab.
"""
from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from app.server import CHROMIUM, CHROMIUM_ARGS, FIRST_CONTENT, free_port, start_app, stop_app  # noqa: E402

# tabs whose story is below their controls: scrolled so this element is at the top of the screenshot
SCROLL_TO = {"noisy": "#noisy-gallery"}
def pick_run(page, run_id: str | None, expect) -> None:
    """Select run_id in the run picker (or keep the app's choice) and wait until the Runs tab shows it."""
    if run_id:
        box = page.locator("#run-picker input").first
        box.fill(run_id)
        box.press("Enter")
    expect(page.locator("#run-status")).not_to_contain_text("No run selected", timeout=30000)


def shoot(url: str, out: str, run_id: str | None, chromium: str, width: int, height: int) -> list:
    from playwright.sync_api import expect, sync_playwright
    paths = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        pick_run(page, run_id, expect)
        for name, label, selector, text, drawn in FIRST_CONTENT:
            page.get_by_role("tab", name=label).click()
            expect(page.locator(selector)).to_contain_text(text, timeout=120000)
            expect(page.locator(drawn).first).to_be_visible(timeout=60000)
            if name in SCROLL_TO:
                page.locator(SCROLL_TO[name]).evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(2500)  # images and plots settle
            path = os.path.join(out, f"{name}.png")
            page.screenshot(path=path, full_page=False)
            paths.append(path)
            print(f"wrote {path}")
        browser.close()
    return paths


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs", help="runs folder with at least one finished run")
    ap.add_argument("--run", default=None, help="run id to show (default: the app's choice)")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "screenshots"))
    ap.add_argument("--chromium", default=CHROMIUM)
    ap.add_argument("--size", default="1400x1000", help="viewport WIDTHxHEIGHT")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    os.makedirs(args.out, exist_ok=True)
    port = free_port()
    app = start_app(os.path.abspath(args.runs), port)
    try:
        shoot(f"http://127.0.0.1:{port}/", args.out, args.run, args.chromium, width, height)
    finally:
        stop_app(app)


if __name__ == "__main__":
    main()
