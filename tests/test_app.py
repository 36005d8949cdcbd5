"""The workbench's handlers through gradio_client, on a finished tiny run made by the pipeline."""
import csv
import json
import os

import pytest

gradio_client = pytest.importorskip("gradio_client")

from app.__main__ import parse_args, parse_auth  # noqa: E402
from app.build import build_app  # noqa: E402
from app.context import AppContext  # noqa: E402
from app_helpers import copy_runs, free_port  # noqa: E402
from gradio_client import Client  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    runs, run_id = copy_runs(str(tmp_path_factory.mktemp("app")))
    ctx = AppContext(runs)
    demo = build_app(ctx)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                allowed_paths=[runs], share=False)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    yield client, ctx, run_id
    demo.close()


def text_of(x) -> str:
    return json.dumps(x, default=str) if not isinstance(x, str) else x


def test_cli_defaults_are_local_and_auth_is_parsed():
    args = parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860
    assert parse_auth("ann:secret") == ("ann", "secret") and parse_auth(None) is None
    with pytest.raises(SystemExit):
        parse_auth("no-colon")


def test_every_tab_has_its_endpoints(served):
    client, _, _ = served
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    for n in ("/runs_refresh", "/start_run", "/cancel_run", "/noisy_pairs", "/noisy_decide", "/noisy_export",
              "/corr_p", "/corr_matches", "/evo_snapshot", "/evo_gif", "/embedding_map", "/recall_table",
              "/query_text", "/audit_show", "/audit_decide"):
        assert n in names


def test_runs_refresh_shows_the_finished_run(served):
    client, _, run_id = served
    status, bar, _fig, log, table, picker = client.predict(run_id, api_name="/runs_refresh")
    assert "done" in status and "evaluate" in status and "100%" in bar
    assert [r for r in table["data"] if r[-1] == run_id and r[1] == "done" and r[0].startswith("tiny #")]


def test_noisy_pairs_sorted_filtered_and_paged(served):
    client, ctx, run_id = served
    n = len(ctx.view(run_id).scores()["pair_ids"])
    table, gallery, info, page = client.predict(run_id, "all", "all", 0, 1, "clean", "ascending", 1, 200,
                                                api_name="/noisy_pairs")
    rows = table["data"]
    assert len(rows) == min(200, n) and f"of {n:,} training pairs" in info and page == 1
    clean = [r[2] for r in rows]
    assert clean == sorted(clean)
    assert len(gallery) == min(40, n)
    flagged, *_ = client.predict(run_id, "flagged", "noisy", 0, 0.5, "clean", "ascending", 1, 200,
                                 api_name="/noisy_pairs")
    assert all(r[5] is True and r[6] is True and r[2] <= 0.5 for r in flagged["data"])
    # pages of 25 by descending track B score: together the whole sorted list, the last page past the end
    seen = []
    for p in range(1, n // 25 + 2):
        t, _, info, got = client.predict(run_id, "all", "all", 0, 1, "track_B", "descending", p, 25,
                                         api_name="/noisy_pairs")
        assert got == p and f"rows {(p - 1) * 25 + 1}–" in info and "highest track B score first" in info
        seen += t["data"]
    assert [r[0] for r in seen] == [r["pair"] for r in ctx.view(run_id).pair_rows(sort="track_B", descending=True)]
    t, _, info, got = client.predict(run_id, "all", "all", 0, 1, "track_B", "descending", 10 ** 6, 25,
                                     api_name="/noisy_pairs")
    assert got == -(-n // 25) and t["data"] == seen[(got - 1) * 25:]


def test_detection_curves_and_threshold(served):
    client, _, run_id = served
    roc, pr, text = client.predict(run_id, 0.5, api_name="/noisy_detection")
    assert "precision" in text and "recall" in text
    assert "AUC" in text_of(roc)


def test_pair_audit_decision_is_on_disk_before_confirming(served):
    client, ctx, run_id = served
    msg = client.predict(run_id, 3, "noisy", "looks wrong", api_name="/noisy_decide")
    assert msg.startswith("✅")
    lines = open(os.path.join(ctx.run_dir(run_id), "audit", "decisions.jsonl")).read().splitlines()
    last = json.loads(lines[-1])
    assert (last["target"], last["item"], last["decision"], last["comment"]) == ("pair", 3, "noisy", "looks wrong")
    assert "⚠️" in client.predict(run_id, 10 ** 6, "noisy", "", api_name="/noisy_decide")
    table, *_ = client.predict(run_id, "all", "all", 0, 1, "pair", "ascending", 1, 25, api_name="/noisy_pairs")
    assert [r for r in table["data"] if r[0] == 3][0][7] == "noisy"


def test_bad_run_ids_are_rejected(served):
    client, ctx, _ = served
    for bad in ("../etc", "a/../../b", "/etc/passwd", ".hidden"):
        assert "⚠️" in client.predict(bad, 3, "noisy", "", api_name="/noisy_decide")
        _, _, text = client.predict(bad, 0.5, api_name="/noisy_detection")
        assert "⚠️" in text
    assert not os.path.exists(os.path.join(os.path.dirname(ctx.runs_dir), "audit"))


def test_export_decisions_and_cleaned_pairs(served):
    client, ctx, run_id = served
    client.predict(run_id, 5, "clean", "", api_name="/noisy_decide")
    files, msg = client.predict(run_id, 0.5, api_name="/noisy_export")
    by_name = {os.path.basename(f): f for f in files}
    assert "clean score ≥ 0.50" in msg
    with open(by_name["cleaned_pairs_clean-ge-0.50.csv"]) as f:
        kept = list(csv.DictReader(f))
    ids = {int(r["pair"]) for r in kept}
    assert 5 in ids and 3 not in ids  # audited clean kept, audited noisy dropped
    with open(by_name["decisions.csv"]) as f:
        assert any(r["item"] == "5" and r["decision"] == "clean" for r in csv.DictReader(f))


def test_pair_detail_and_stored_heatmaps(served):
    client, ctx, run_id = served
    item = ctx.view(run_id).heatmap_items()[0]
    image, desc, grid, note = client.predict(run_id, item["item_id"], api_name="/noisy_pair")
    assert image and grid and f"pair {item['item_id']}" in desc and "per-word maps" in note
    grid, note = client.predict(run_id, 0, api_name="/corr_item")
    assert grid and "s(v, t)" in note


def test_correspondence_p_and_top_matches(served):
    client, _, run_id = served
    fig = client.predict(run_id, api_name="/corr_p")
    assert "Heatmap" in text_of(fig) or "heatmap" in text_of(fig)
    image, table, note = client.predict(run_id, 0, 3, api_name="/corr_matches")
    assert image and len(table["data"]) == 3 and table["data"][0][1] >= table["data"][-1][1]


def test_evolution_snapshots_and_gif(served):
    client, ctx, run_id = served
    grid, change, caption = client.predict(run_id, 1, api_name="/evo_snapshot")
    assert grid and change and "iteration" in caption and "amplified **×" in caption
    path, msg = client.predict(run_id, api_name="/evo_gif")
    assert path.endswith(".gif") and open(path, "rb").read(4) == b"GIF8"


def test_recall_table(served):
    client, _, run_id = served
    table, fig, note = client.predict(run_id, api_name="/recall_table")
    assert {r[0] for r in table["data"]} >= {"random", "mdw"} and "methods evaluated" in note


def test_embedding_map_and_picking_a_point(served):
    client, _, run_id = served
    statuses = ["clean", "flagged", "noisy (missed)", "noisy (flagged)", "distilled"]
    images, texts, table, note = client.predict(run_id, ["real", "distilled"], statuses, None,
                                                api_name="/embedding_map")
    assert "images:" in note and "texts:" in note and "scattergl" in text_of(images).lower()
    assert note.startswith("Map: PCA")   # the tab says how the map was made (a tiny run: PCA)
    rows = table["data"]
    assert {r[2] for r in rows} == {"real", "distilled"} and {r[1] for r in rows} == {"image", "text"}
    distilled = [r for r in rows if r[2] == "distilled"][0]
    assert rows[0][2] == "distilled"   # distilled points head the table
    *_, image, text = client.predict(run_id, ["real", "distilled"], statuses, distilled[0], api_name="/embedding_point")
    assert image and text.startswith(f"distilled pair {distilled[3]}")
    *_, only, _ = client.predict(run_id, ["real"], ["clean"], None, api_name="/embedding_map")
    assert only["data"] and all(r[2] == "real" and r[4] == "clean" for r in only["data"])


def test_retrieval_queries(served, tmp_path):
    from PIL import Image
    client, ctx, run_id = served
    gallery, msg = client.predict(run_id, "a red circle", 3, api_name="/query_text")
    assert len(gallery) == 3 and "top 3" in msg and "score" in gallery[0]["caption"]
    path = tmp_path / "q.png"
    Image.fromarray(ctx.view(run_id).pair_image(0)).save(path)
    table, msg = client.predict(run_id, gradio_client.handle_file(str(path)), 4, api_name="/query_image")
    assert len(table["data"]) == 4 and all(isinstance(r[2], str) for r in table["data"])


def test_audit_distilled_pairs(served):
    client, ctx, run_id = served
    image, nearest, matches, current, index, counter = client.predict(run_id, 2, api_name="/audit_show")
    m = ctx.distill_view(run_id).distilled().m
    assert image and nearest["data"] and matches["data"] and index == 2 and f"of {m}" in counter
    msg, counter = client.predict(run_id, 2, "reject", "blurry", api_name="/audit_decide")
    assert msg.startswith("✅") and "reject 1" in counter
    *_, current, _, _ = client.predict(run_id, 2, api_name="/audit_show")
    assert "reject" in current and "blurry" in current


def test_start_rejects_a_bad_config(served):
    client, ctx, _ = served
    before = len(ctx.store.list_runs())
    msg, _ = client.predict("bad", "scenes", "", "", 0.2, "cpu-small", 8, 4, 2, "auto", "data.eta=2",
                            api_name="/start_run")
    assert "⚠️" in msg and "eta" in msg
    assert len(ctx.store.list_runs()) == before


def test_auth_is_required_when_set(tmp_path):
    ctx = AppContext(str(tmp_path / "runs"))
    demo = build_app(ctx)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                auth=("ann", "secret"), share=False)
    try:
        with pytest.raises(Exception):
            Client(f"http://127.0.0.1:{port}/", verbose=False)
        ok = Client(f"http://127.0.0.1:{port}/", auth=("ann", "secret"), verbose=False)
        assert "/runs_refresh" in ok.view_api(print_info=False, return_format="dict")["named_endpoints"]
    finally:
        demo.close()


def test_audit_log_validates_and_the_latest_decision_wins(tmp_path):
    from mdw.errors import RunError
    from mdw.runs.audit import decisions_csv, latest_decisions, read_decisions, record_decision
    run = str(tmp_path)
    record_decision(run, "pair", 4, "noisy", "first look")
    with open(tmp_path / "audit" / "decisions.jsonl", "a") as f:
        f.write('{"target": "pair", "item": 9, "deci')  # a writer killed mid-line
    record_decision(run, "pair", 4, "clean")
    record_decision(run, "distilled", 1, "accept")
    for bad in (("pair", 1, "accept"), ("nope", 1, "noisy"), ("pair", -1, "noisy"), ("pair", "x", "noisy")):
        with pytest.raises(RunError):
            record_decision(run, *bad)
    assert len(read_decisions(run)) == 3
    assert latest_decisions(run, "pair")[4]["decision"] == "clean"
    assert list(latest_decisions(run, "distilled")) == [1]
    assert decisions_csv(run).count("\n") == 4


def test_first_launch_starts_the_demo_run_once(tmp_path):
    import sys
    from app.__main__ import start_demo_if_empty
    ctx = AppContext(str(tmp_path / "runs"))
    ctx.manager.worker_argv = lambda run_id: [sys.executable, "-c", "import time; time.sleep(30)", run_id]
    run_id = start_demo_if_empty(ctx)
    try:
        assert run_id and ctx.store.read_config(run_id)["name"] == "demo-scenes"
        assert ctx.store.read_config(run_id)["data"]["source"] == "scenes"
        assert start_demo_if_empty(ctx) is None
        assert ctx.default_run() == run_id
    finally:
        ctx.manager.cancel(run_id, grace_s=2)


def test_heatmaps_of_any_real_pair_on_demand(served):
    client, ctx, run_id = served
    stored = {it["item_id"] for it in ctx.view(run_id).heatmap_items()}
    pair = next(i for i in range(ctx.view(run_id).n_pairs()) if i not in stored)
    choice, note = client.predict(run_id, pair, api_name="/corr_compute")
    assert f"real pair {pair}" in note
    row = choice["value"] if isinstance(choice, dict) else choice
    grid, note = client.predict(run_id, row, api_name="/corr_item")
    assert grid and f"real pair {pair}" in note
    assert "⚠️" in client.predict(run_id, 10 ** 7, api_name="/corr_compute")[1]


def test_every_tab_opens_on_meaningful_content(served):
    """Issue 17: no blank first views. Noisy pairs opens on the first flagged pair with its image and
    word maps, the embedding map's sample panel on the first distilled point, Retrieval on an example
    query of the run's own captions already answered, Evolution with the amplified change."""
    from mdw.views.noisy import first_flagged_pair
    client, ctx, run_id = served
    statuses = ["clean", "flagged", "noisy (missed)", "noisy (flagged)", "distilled"]
    out = client.predict(run_id, "all", "all", 0, 1, "clean", "ascending", 3, 50, 0.5, None, api_name="/noisy_open")
    assert out[3] == 1 and "rows 1–50 of" in out[2]   # a new run opens on page 1
    pair, image, desc, heat, note = out[7:]   # (the gallery's ids are a gr.State: not in the API)
    assert pair == first_flagged_pair(ctx.view(run_id)) and image and f"pair {pair}" in desc
    assert heat and "per-word maps" in note   # the first flagged pair is among the stored least-trusted maps
    *_, picked, image, text = client.predict(run_id, ["real", "distilled"], statuses, api_name="/embedding_open")
    assert image and text.startswith("distilled pair 0 (image point)")
    query, gallery, msg = client.predict(run_id, 5, api_name="/retrieval_open")
    assert query and gallery and "example query" in msg and "its own image" in msg
    change, p, alpha, ltm, info = client.predict(run_id, api_name="/evo_curves")
    assert "×" in info and "image 0" in text_of(change) and "diagonal mass" in text_of(p)
    assert "visual" in text_of(alpha) and "L_TM" in text_of(ltm)
