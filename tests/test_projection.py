"""The embedding map: 2-D coordinates for every kept point, stored once and reused, subsampling that
keeps flagged and distilled points, and distilled points planted beside their source pairs."""
import os

import numpy as np
import pytest
import torch

from mdw.config import RunConfig
from mdw.distill.synset import DistilledSet
from mdw.evaluate.projection import embed_2d, load_projection, project_run, select_pairs, status_codes
from mdw.evaluate.stages import stage_projection
from mdw.evaluate.view_config import ProjectionConfig
from mdw.errors import ConfigError, RunError
from mdw.runs.context import run_in_context
from mdw.runs.store import RunStore
from mdw.train.experts_io import load_scores

from helpers import tiny_run_dir

M = 6


@pytest.fixture(scope="module")
def run_with_set(tmp_path_factory):
    """The tiny run with a distilled set started from M real training pairs (slightly perturbed)."""
    run_dir, cfg = tiny_run_dir(tmp_path_factory)
    from mdw.inputs import run_data
    p = run_data(run_dir)
    train = p.pairs.pairs_in("train")
    ids = train[np.random.default_rng(0).choice(len(train), M, replace=False)]
    images = torch.from_numpy(np.array(p.images[p.pairs.pair_image[ids]]))
    from mdw.models.text_cache import cached_g0_features
    from mdw.models.presets import build_model
    g0 = cached_g0_features([p.pairs.captions[i] for i in ids], build_model(cfg.model, 32).text,
                            cfg.resolved_cache_dir())
    syn = DistilledSet.from_real(images, g0, ids, lr=0.01)
    gen = torch.Generator().manual_seed(0)
    syn.images = (syn.images + 0.01 * torch.randn(syn.images.shape, generator=gen)).clamp(0, 1)
    syn.text = syn.text + 0.001 * torch.randn(syn.text.shape, generator=gen)
    syn.save(os.path.join(run_dir, "distill", "distilled.pt"))
    return run_dir, cfg, ids


def test_embed_2d_methods_and_seeding():
    x = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    xy, method = embed_2d(x)
    assert method == "identity" and np.array_equal(xy, x)          # already 2-D: never re-projected
    xy, method = embed_2d(x[:, :1])
    assert method == "identity" and xy.shape == (30, 2)
    hi = np.random.default_rng(1).normal(size=(40, 16)).astype(np.float32)
    a, method = embed_2d(hi)                                       # tiny set: PCA
    assert method == "pca" and a.shape == (40, 2) and np.array_equal(a, embed_2d(hi)[0])
    assert np.allclose(np.cov(a.T)[0, 1], 0, atol=1e-4)            # uncorrelated principal axes
    with pytest.raises(ConfigError):
        ProjectionConfig(method="tsne").validate()
    assert RunConfig.from_dict({"projection": {"method": "pca"}}).projection.method == "pca"


def test_select_pairs_keeps_flagged_and_distilled():
    keep = np.array([3, 500, 999, 42])
    sel = select_pairs(1000, keep, 100, seed=1)
    assert len(sel) == 100 and set(keep) <= set(sel.tolist()) and np.all(np.diff(sel) > 0)
    assert np.array_equal(sel, select_pairs(1000, keep, 100, seed=1))
    assert np.array_equal(select_pairs(50, keep[:1], 100), np.arange(50))
    assert len(select_pairs(1000, np.arange(300), 100)) == 300     # more must-keep pairs than room: all kept
    assert status_codes(np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])).tolist() == [0, 1, 2, 3]


def _near(pts, ids, kind: int) -> tuple:
    """For each distilled point of `kind`: (the fraction of real points of that kind closer to it than
    its source pair's point, its distance to that point over the real points' extent)."""
    real = (pts["source"] == 0) & (pts["kind"] == kind)
    extent = np.hypot(np.ptp(pts["x"][real]), np.ptp(pts["y"][real]))
    closer, rel = [], []
    for m, pid in enumerate(ids):
        d = np.flatnonzero((pts["source"] == 1) & (pts["kind"] == kind) & (pts["distilled_id"] == m))[0]
        assert pts["pair_id"][d] == pid
        dist = np.hypot(pts["x"][real] - pts["x"][d], pts["y"][real] - pts["y"][d])
        to_source = dist[pts["pair_id"][real] == pid][0]
        closer.append(float((dist < to_source).mean()))
        rel.append(to_source / extent)
    return np.array(closer), np.array(rel)


def test_projection_writes_every_point_and_is_reused(run_with_set):
    run_dir, cfg, ids = run_with_set
    meta = project_run(run_dir, cfg, ProjectionConfig(), force=True)
    assert meta["method"] == "pca" and not meta["reused"] and meta["n_distilled"] == M
    pts = load_projection(run_dir)
    n = meta["n_pairs_total"]
    assert len(pts["x"]) == meta["n_points"] == 2 * n + 2 * M and not meta["subsampled"]
    assert np.isfinite(pts["x"]).all() and np.isfinite(pts["y"]).all()
    for kind in (0, 1):   # each real pair has one image and one text point, each distilled pair too
        assert sorted(pts["pair_id"][(pts["kind"] == kind) & (pts["source"] == 0)]) == sorted(
            pts["pair_id"][(pts["kind"] == 1 - kind) & (pts["source"] == 0)])
    s = load_scores(run_dir, "dtcl")
    assert int(pts["flagged"][pts["source"] == 0].sum()) == 2 * int(s["flag"][-1].sum())
    assert set(pts["status"][pts["source"] == 1].tolist()) == {-1}
    assert (pts["is_noisy"][pts["source"] == 0] >= 0).all()
    for kind in (0, 1):   # planted beside their sources (a random point: half the real points closer)
        closer, rel = _near(pts, ids, kind)
        assert closer.max() < 0.1 and rel.max() < 0.05, (kind, closer, rel)
    # the second call reuses the stored map; a changed config recomputes it
    mtime = os.stat(os.path.join(run_dir, "projection", "points.npz")).st_mtime_ns
    again = project_run(run_dir, cfg, ProjectionConfig())
    assert again["reused"] and os.stat(os.path.join(run_dir, "projection", "points.npz")).st_mtime_ns == mtime
    # subsampling keeps every flagged pair and every distilled pair's source
    small = project_run(run_dir, cfg, ProjectionConfig(max_points=40 + 2 * M))
    assert small["subsampled"] and not small["reused"]
    pts = load_projection(run_dir)
    kept = set(pts["pair_id"][pts["source"] == 0].tolist())
    flagged = set(np.asarray(s["pair_ids"])[s["flag"][-1].astype(bool)].tolist())
    assert flagged <= kept and set(ids.tolist()) <= kept and len(kept) == small["n_pairs_kept"]
    with pytest.raises(RunError, match="no embedding map"):
        load_projection(os.path.dirname(run_dir))


def test_umap_stage_planted_and_reused(run_with_set):
    run_dir, cfg, ids = run_with_set
    cfg.projection = ProjectionConfig(method="umap", seed=3)   # the run config's own section
    store = RunStore(os.path.dirname(run_dir))
    run_id = os.path.basename(run_dir)
    metas = []

    def body(ctx):
        for _ in range(2):
            with ctx.stage("projection"):
                stage_projection(ctx, cfg, lambda f, m="": None)
            metas.append(load_projection(ctx.run_dir)["meta"])

    assert run_in_context(store, run_id, body) == 0, store.read_status(run_id)["error"]
    assert metas[0]["method"] == "umap" and metas[0] == metas[1]
    events = [e for e in store.read_events(run_id, "projection")]
    assert [e["projection_reused"] for e in events] == [False, True]
    pts = load_projection(run_dir)
    for kind in (0, 1):
        closer, _ = _near(pts, ids, kind)
        assert closer.max() < 0.1 and closer.mean() < 0.05, (kind, closer)
