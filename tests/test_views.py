"""mdw/views: what each tab shows, on a finished tiny pipeline run (the one the app tests share)."""
import math
import os

import numpy as np
import pytest
import torch

from app_helpers import copy_runs
from mdw.runs.store import read_jsonl
from mdw.runs.view import RunView
from mdw.runs.view_distill import DistillView


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run dir, RunView, DistillView) of a private copy of the tiny run."""
    runs, run_id = copy_runs(str(tmp_path_factory.mktemp("views")))
    d = os.path.join(runs, run_id)
    return d, RunView(d), DistillView(d)


def test_form_choices_are_the_library_lists():
    from mdw.config import SOURCES
    from mdw.models.presets import PRESET_EXAMPLES, PRESETS
    from mdw.views.runs import form_choices
    c = form_choices()
    assert c.presets == list(PRESETS) + list(PRESET_EXAMPLES)
    assert c.sources == list(SOURCES) and "cpu-wide" in c.presets and "nfnet-bert" in c.presets
    assert c.devices == ["auto", "cpu", "cuda"]


def test_short_label_and_loss_curves(run):
    from mdw.views.runs import latest_per_step, loss_curves, short_label
    d, _, _ = run
    assert short_label("20250102-030405-demo-scenes-ab12") == "demo-scenes #ab12 · 01-02 03:04"
    assert short_label("odd-id") == "odd-id"
    assert short_label(os.path.basename(d)).startswith("tiny #")
    events = read_jsonl(os.path.join(d, "events.jsonl"))
    c = loss_curves(events)
    assert c.ltm.steps == [1, 2, 3, 4]                      # distill.iterations=4
    want = {e["step"]: e["L_TM"] for e in events if e.get("stage") == "distill" and "L_TM" in e}
    assert c.ltm.values == pytest.approx([want[s] for s in c.ltm.steps])
    assert {"train_loss_A", "train_loss_B", "auc"} <= set(c.experts) and c.experts["auc"].steps == [1, 2]
    # a resumed stage re-logs a step: the latest value wins, a null (non-finite) value is skipped
    again = events + [{"stage": "distill", "step": 2, "L_TM": 9.5}, {"stage": "distill", "step": 3, "L_TM": None}]
    c2 = latest_per_step(again, "distill", "L_TM")
    assert c2.steps == [1, 2, 3, 4] and c2.values[1] == 9.5 and c2.values[2] == pytest.approx(want[3])


def test_first_flagged_pair_and_pair_detail(run):
    from mdw.views.noisy import first_flagged_pair, pair_detail
    _, v, _ = run
    s = v.scores()
    flagged = np.flatnonzero(s["flag"].astype(bool))
    pool = flagged if len(flagged) else np.arange(len(s["pair_ids"]))
    want = int(s["pair_ids"][pool[np.argmin(s["consensus"][pool])]])
    assert first_flagged_pair(v) == want
    d = pair_detail(v, want, compute_missing=True)
    i = int(np.flatnonzero(s["pair_ids"] == want)[0])
    assert d.pair == want and d.caption == v.caption(want) and d.clean == pytest.approx(float(s["consensus"][i]))
    assert d.noisy == bool(s["is_noisy"][i]) and d.truth_text() in ("noisy (injected)", "clean")
    assert np.array_equal(d.image, v.pair_image(want))
    assert d.maps.grid is not None and d.maps.grid.dtype == np.uint8 and "per-word maps" in d.maps.note
    with pytest.raises(ValueError):
        pair_detail(v, 10 ** 6)


def test_one_export_names_its_threshold(run):
    from mdw.runs.audit import record_decision
    from mdw.views.noisy import export_audit
    d, v, _ = run
    s = v.scores()
    lo = int(s["pair_ids"][np.argmin(s["consensus"])])
    record_decision(d, "pair", lo, "clean", "")
    out = export_audit(v, 0.5)
    assert os.path.basename(out.cleaned_pairs) == "cleaned_pairs_clean-ge-0.50.csv"
    assert os.path.basename(out.decisions) == "decisions.csv" and out.threshold == 0.5
    want = int((s["consensus"] >= 0.5).sum()) + int(s["consensus"].min() < 0.5)   # + the audited-clean pair
    with open(out.cleaned_pairs) as f:
        assert out.kept == want == len(f.read().splitlines()) - 1
    assert "≥ 0.50" in out.summary()
    with pytest.raises(ValueError):
        export_audit(v, 1.5)


def test_embedding_map_layers_palette_and_first_point(run):
    from mdw.views.embedding import (OKABE_ITO, PALETTE, embedding_map, first_distilled_point, load_points,
                                     point_rows, point_sample)
    d, v, dv = run
    pts = load_points(d)
    m = pts.meta["n_distilled"]
    assert m == 8 and len(pts) == pts.meta["n_points"] == 2 * pts.meta["n_pairs_kept"] + 2 * m
    assert len(set(PALETTE.values())) == len(PALETTE) and set(PALETTE.values()) <= set(OKABE_ITO.values())
    for kind in ("image", "text"):
        mv = embedding_map(pts, kind)
        assert mv.shown == mv.total == len(pts) // 2
        last = mv.layers[-1]
        assert last.name == "distilled" and last.labels == [str(i) for i in range(m)]
        assert all(layer.size < last.size for layer in mv.layers[:-1])
        assert all(pts.kind[p] == kind for layer in mv.layers for p in layer.points)
    few = embedding_map(pts, "image", max_real=10)   # a big map sends a sample of its real points
    drawn = np.concatenate([layer.points for layer in few.layers])
    assert few.shown == 10 + m == len(drawn) and few.total == len(pts) // 2
    assert (pts.source[drawn] == "real").sum() == 10 and few.layers[-1].name == "distilled"
    only = embedding_map(pts, "image", statuses=["distilled"])
    assert [layer.name for layer in only.layers] == ["distilled"] and only.shown == m
    rows = point_rows(pts, [embedding_map(pts, "image"), embedding_map(pts, "text")])
    assert [r[2] for r in rows[:2 * m]] == ["distilled"] * (2 * m) and rows[2 * m][2] == "real"
    first = first_distilled_point(pts)
    assert (pts.source[first], pts.kind[first], int(pts.item[first])) == ("distilled", "image", 0)
    s = point_sample(v, dv, pts, first)
    assert np.array_equal(s.image, dv.distilled().images_u8()[0]) and s.text.startswith("distilled pair 0")
    real = int(np.flatnonzero(pts.source == "real")[0])
    assert point_sample(v, dv, pts, real).text.startswith(f"real pair {int(pts.item[real])}")
    with pytest.raises(ValueError):
        embedding_map(pts, "video")
    # the map says how it was made: this tiny run has under 1,000 points, so the default took PCA
    from mdw.views.embedding import projection_caption
    n = pts.meta["n_fitted"]
    assert pts.meta["method"] == "pca" and projection_caption(pts.meta).startswith(
        f"Map: PCA (a linear view; {n:,} points, under projection.pca_below; UMAP from 1,000)")
    assert f"{n:,} points fitted" in projection_caption(pts.meta)
    asked = dict(pts.meta, signature={"config": {"method": "pca", "pca_below": 1000}}, n_fitted=5000)
    assert "(a linear view; projection.method=pca)" in projection_caption(asked)   # asked, not too small
    other = dict(pts.meta, signature={"config": {"method": "auto", "pca_below": 5000}}, n_fitted=3000)
    assert "3,000 points, under projection.pca_below; UMAP from 5,000" in projection_caption(other)
    assert "too few points" in projection_caption(dict(pts.meta, signature={"config": {"method": "umap"}}, n_fitted=3))
    assert "already 2-D" in projection_caption(dict(pts.meta, method="identity"))
    big = dict(pts.meta, method="umap", subsampled=True, n_pairs_kept=50_000, n_pairs_total=120_000, n_fitted=100_016)
    assert projection_caption(big).startswith("Map: UMAP") and "100,016 points fitted" in projection_caption(big)
    assert "subsampled, 50,000 of 120,000" in projection_caption(big)


def test_evolution_curves_measure_what_the_snapshots_hold(run):
    from mdw.views.evolution import BAR_H, evolution_curves, nice_factor, snapshot_frame
    _, _, dv = run
    c = evolution_curves(dv)
    assert c.iterations == [0, 2, 4] and c.change.shape == (3, 8) and not c.change[0].any()
    first, last = (dv.snapshot(i).images.clamp(0, 1) for i in (0, 4))
    assert c.change[2] == pytest.approx((last - first).abs().mean((1, 2, 3)).double().numpy(), rel=1e-5)
    p = torch.sigmoid(dv.snapshot(0).z).double().numpy()
    q = p / p.sum(1, keepdims=True)
    assert c.p_diag[0] == pytest.approx(np.diag(q).mean())
    assert c.p_entropy[0] == pytest.approx(-(q * np.log(q)).sum(1).mean() / math.log(8))
    assert c.alpha[0] == pytest.approx([0.03] * 3) and c.groups == ["visual", "text", "logit_scale"]
    assert 1 < c.factor and c.factor == nice_factor(float(np.percentile(
        (last - first).abs().mean(1).numpy(), 99.5)))
    f = snapshot_frame(dv, 4, c)
    assert f.full_scale == pytest.approx(1 / c.factor) and f.change.shape[0] == f.images.shape[0] + BAR_H
    assert f"×{c.factor:g}" in f.caption() and f.mean_change == pytest.approx(c.change[2].mean())
    from mdw.heatmaps.render import colourise
    start = snapshot_frame(dv, 0, c).change[:f.images.shape[0]].reshape(-1, 3)
    zero = tuple(colourise(np.zeros((1, 1)))[0, 0])     # no change yet: the ramp's 0 colour (and the grid's gaps)
    assert {tuple(x) for x in np.unique(start, axis=0)} == {zero, (24, 24, 24)}
    with pytest.raises(ValueError):
        snapshot_frame(dv, 3, c)


def test_nice_factor_says_the_amplification_in_two_digits():
    from mdw.views.evolution import nice_factor
    assert nice_factor(0.0123) == 81 and nice_factor(0.00037) == 2700 and nice_factor(0.5) == 2
    assert nice_factor(0.0) == 1 and nice_factor(3.0) == 1


def test_retrieval_example_query_and_recall_table(run):
    from mdw.evaluate.index import RunIndex
    from mdw.views.retrieval import RECALL_COLUMNS, example_query, image_answer, recall_table, text_answer
    d, v, dv = run
    idx = RunIndex.load(d)
    q = example_query(idx)
    assert q == idx.items["captions"][0]
    a = text_answer(idx, v, q, 5)
    raw = idx.query_text(q, 5)
    assert [h.rank for h in a.hits] == [1, 2, 3, 4, 5] and [h.score for h in a.hits] == [r["score"] for r in raw]
    own = int(idx.caption_image[0])
    assert a.own_rank == next((r["rank"] for r in raw if r["image"] == own), None)
    assert [h.own for h in a.hits] == [r["image"] == own for r in raw]
    assert np.array_equal(a.hits[0].image, idx.image_u8(raw[0]["image"]))
    assert a.in_split and "example query" in a.summary(example=True)
    assert "a caption of the test split" in a.summary() and not text_answer(idx, v, "zzz qqq", 2).in_split
    hits = image_answer(idx, v.pair_image(0), 3)
    assert [h.rank for h in hits] == [1, 2, 3] and all(isinstance(h.caption, str) for h in hits)
    rows = dv.results()
    t = recall_table(rows)
    assert t.columns == RECALL_COLUMNS and [r[0] for r in t.rows] == [r["method"] for r in rows]
    assert t.mean == pytest.approx([r["mean_recall"] for r in rows])
    assert t.rows[0][-1] == round(rows[0]["mean_recall"], 2)
