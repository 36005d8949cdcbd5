"""Screenshots of every tab of the workbench for the README (docs/screenshots/<tab>.png).

    python scripts/screenshots.py --runs runs [--run RUN_ID] [--out docs/screenshots]

Starts `python -m app` on a free local port over the runs folder (no demo run is started), opens it
in Debian's chromium through Playwright, picks the run (default: the app's own choice, a running
run or the newest) and saves one PNG a tab.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABS = [("runs", "Runs", "#run-status"), ("noisy", "Noisy pairs", "#noisy-info"),
        ("correspondence", "Correspondence", "#corr-note"), ("evolution", "Evolution", "#evo-caption"),
        ("embedding", "Embedding map", "#emb-note"), ("retrieval", "Retrieval", "#ret-note"),
        ("audit", "Audit", "#audit-progress")]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the app did not answer at {url} within {timeout:.0f} s")


def shoot(url: str, out: str, run_id: str | None, chromium: str, width: int, height: int) -> list:
    from playwright.sync_api import expect, sync_playwright
    paths = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        if run_id:
            box = page.locator("#run-picker input").first
            box.fill(run_id)
            box.press("Enter")
        expect(page.locator("#run-status")).not_to_contain_text("No run selected", timeout=30000)
        for name, label, selector in TABS:
            page.get_by_role("tab", name=label).click()
            expect(page.locator(selector)).not_to_be_empty(timeout=30000)
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
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--size", default="1400x1000", help="viewport WIDTHxHEIGHT")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    os.makedirs(args.out, exist_ok=True)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=REPO, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1")
    app = subprocess.Popen([sys.executable, "-m", "app", "--runs", os.path.abspath(args.runs), "--port", str(port),
                            "--no-demo"], cwd=REPO, env=env, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        shoot(f"http://127.0.0.1:{port}/", args.out, args.run, args.chromium, width, height)
    finally:
        app.terminate()
        try:
            app.wait(timeout=15)
        except subprocess.TimeoutExpired:
            app.kill()


if __name__ == "__main__":
    main()
