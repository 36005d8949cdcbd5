"""The workbench in a real browser (Playwright + Debian's chromium): every tab shows its content, a
tiny run started from the form reaches `done`, an audit decision survives an app restart."""
import re

import pytest

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

from app_helpers import copy_runs, free_port, start_app, stop_app  # noqa: E402
from helpers import TINY_RUN  # noqa: E402

TAB_CHECKS = [("Noisy pairs", "#noisy-info", "training pairs"),
              ("Correspondence", "#corr-note", "s(v, t)"),
              ("Evolution", "#evo-info", "snapshots"),
              ("Embedding map", "#emb-note", "points shown"),
              ("Retrieval", "#ret-note", "methods evaluated"),
              ("Audit", "#audit-progress", "distilled pairs decided")]


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_tabs_run_audit_and_restart(tmp_path, browser):
    expect = sync_api.expect
    runs, run_id = copy_runs(str(tmp_path))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    app = start_app(runs, port)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        expect(page.locator("#run-status")).to_contain_text(run_id, timeout=30000)
        expect(page.locator("#run-status")).to_contain_text("done")
        for tab, sel, want in TAB_CHECKS:
            open_tab(page, tab)
            expect(page.locator(sel)).to_contain_text(want, timeout=30000)

        # start a tiny run from the form and watch it finish
        open_tab(page, "Runs")
        page.locator("#new-run-name input, #new-run-name textarea").first.fill("browser-tiny")
        page.locator("#new-run-extra textarea").fill("\n".join(TINY_RUN))
        page.locator("#start-run").click()
        expect(page.locator("#start-msg")).to_contain_text("started", timeout=30000)
        new_id = re.search(r"started (\S+)", page.locator("#start-msg").inner_text()).group(1)
        expect(page.locator("#run-status")).to_contain_text(new_id, timeout=30000)
        expect(page.locator("#mdw-run-state")).to_have_text("done", timeout=240000)

        # an audit decision on the new run's distilled set
        open_tab(page, "Audit")
        expect(page.locator("#audit-progress")).to_contain_text("0 of", timeout=30000)
        page.locator("#audit-comment textarea, #audit-comment input").first.fill("browser check")
        page.locator("#audit-decide").click()
        expect(page.locator("#audit-msg")).to_contain_text("saved", timeout=30000)
        page.close()
    finally:
        stop_app(app)

    app = start_app(runs, port)  # a restart reads the decision back from the run folder
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        expect(page.locator("#run-status")).to_contain_text(new_id, timeout=30000)
        open_tab(page, "Audit")
        expect(page.locator("#audit-current")).to_contain_text("browser check", timeout=30000)
        expect(page.locator("#audit-progress")).to_contain_text("1 of")
    finally:
        stop_app(app)
