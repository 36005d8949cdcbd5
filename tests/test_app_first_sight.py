"""Issue 17 in a real browser (Playwright + Debian's chromium): the app started on an empty runs
folder starts the demo run itself (here a tiny demo config), and once it is done every tab opens on
meaningful content without a click inside it: the first flagged pair with its image and word maps,
the amplified evolution with its scale, the first distilled point's sample, an example query of the
run's own captions answered (app.server.FIRST_CONTENT, which scripts/screenshots.py waits for too)."""
import os

from helpers import TINY_RUN

import pytest

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

from app_helpers import free_port, start_app, stop_app  # noqa: E402

from app.server import FIRST_CONTENT  # noqa: E402


def test_demo_on_an_empty_folder_then_every_tab_opens_on_its_first_content(tmp_path, browser):
    from mdw.config import RunConfig, apply_overrides
    from mdw.evaluate.index import RunIndex
    from mdw.runs.view import RunView
    from mdw.views.noisy import first_flagged_pair
    expect = sync_api.expect
    demo = tmp_path / "demo.json"
    demo.write_text(apply_overrides(RunConfig(), TINY_RUN + [f"cache_dir={tmp_path / 'cache'}"]).to_json())
    runs = str(tmp_path / "runs")
    port = free_port()
    app = start_app(runs, port, log_path=str(tmp_path / "app.log"), demo_config=str(demo))
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.locator("#mdw-run-state")).to_have_text("done", timeout=400000)   # the demo, from nothing
        (run_id,) = [r for r in os.listdir(runs) if not r.startswith(".")]
        run_dir = os.path.join(runs, run_id)
        page.reload()   # as a user opening the finished demo
        for _name, label, selector, text, drawn in FIRST_CONTENT:
            page.get_by_role("tab", name=label).click()
            expect(page.locator(selector)).to_contain_text(text, timeout=60000)
            expect(page.locator(drawn).first).to_be_visible(timeout=30000)
            if label == "Noisy pairs":
                pair = first_flagged_pair(RunView(run_dir))
                expect(page.locator("#noisy-pair input")).to_have_value(str(pair))
                expect(page.locator("#noisy-desc")).to_contain_text(f"pair {pair}")
                expect(page.locator("#noisy-image img")).to_be_visible()
            if label == "Evolution":
                expect(page.locator("#evo-info")).to_contain_text("amplified ×")
                expect(page.locator("#evo-per-image .js-plotly-plot")).to_be_visible()
                expect(page.locator("#evo-p")).to_contain_text("diagonal mass")
            if label == "Embedding map":
                expect(page.locator("#emb-sample-text")).to_contain_text("distilled pair 0 (image point)")
                expect(page.locator("#emb-images")).to_contain_text("distilled")
            if label == "Retrieval":
                query = RunIndex.load(run_dir).items["captions"][0]
                expect(page.locator("#ret-text textarea, #ret-text input").first).to_have_value(query)
                expect(page.locator("#ret-gallery img")).to_have_count(5)
        page.close()
    finally:
        stop_app(app)
