"""Issue 16's baselines on a tiny real run: every method through one code path into eval/results.json,
with its student protocol; the clean coreset is MDW's start undistilled; the component ladder; the
filter-* recipe; mdw-init equals MDW when distillation runs zero iterations."""
import json
import os

import numpy as np
import pytest
import torch

from helpers import run_tiny
from mdw.config import ConfigError, EvalConfig
from mdw.distill.synset import DistilledSet
from mdw.evaluate.methods import expand_methods, filter_keep, needs_plain, split_method

METHODS = "random,random@adam,clean-coreset,mtt-vl,filter-mtt-vl,filter-lors,ladder,mdw-no-ceo,expert-dtcl"


@pytest.fixture(scope="module")
def baselines_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    old = os.environ.get("MDW_CACHE")
    store, run_id, code = run_tiny(root, f"evaluate.methods={METHODS}", "data.eta=0.4", until="evaluate")
    assert code == 0, store.read_status(run_id)["error"]
    yield store, run_id
    os.environ.pop("MDW_CACHE", None) if old is None else os.environ.__setitem__("MDW_CACHE", old)


def rows_of(store, run_id) -> dict:
    with open(os.path.join(store.run_dir(run_id), "eval", "results.json")) as f:
        return {r["method"]: r for r in json.load(f)["rows"]}


def sets(store, run_id, name) -> DistilledSet:
    return DistilledSet.load(os.path.join(store.run_dir(run_id), "eval", "sets", f"{name}.pt"))


def test_every_method_has_a_row_with_its_protocol(baselines_run):
    store, run_id = baselines_run
    rows = rows_of(store, run_id)
    assert list(rows) == expand_methods(METHODS.split(","))
    assert set(rows) >= {"mdw-init", "ladder-alpha", "ladder-text", "ladder-p", "ladder-images", "mdw"}
    for name, r in rows.items():
        assert 0 <= r["mean_recall"] <= 100 and np.isfinite(r["mean_recall_std"]), name
    assert rows["random@adam"]["protocol"] == "Adam, lr 0.001"
    assert rows["random"]["protocol"] == "SGD, lr 0.1 / 0.1 / 0.1 (visual/text/logit_scale)"   # evaluate.coreset_lr
    assert rows["clean-coreset"]["protocol"] == rows["random"]["protocol"]
    assert rows["mdw"]["protocol"].startswith("SGD, learned α ")
    assert rows["mdw-init"]["protocol"] == "SGD, learned α 0.03 / 0.03 / 0.03 (visual/text/logit_scale)"


def test_clean_coreset_is_mdws_start_and_the_ladder_learns_one_part_more_per_rung(baselines_run):
    store, run_id = baselines_run
    run_dir = store.run_dir(run_id)
    mdw = DistilledSet.load(os.path.join(run_dir, "distill", "distilled.pt"))
    init = sets(store, run_id, "mdw-init")
    assert np.array_equal(init.init_pairs, mdw.init_pairs)
    start = DistilledSet.load(os.path.join(run_dir, "distill", "snapshots", "it_00000.pt"))
    for a, b in zip(init.tensors(), start.tensors()):
        assert torch.equal(a, b)                      # MDW's exact starting set
    alpha, text, p = (sets(store, run_id, n) for n in ("ladder-alpha", "ladder-text", "ladder-p"))
    changed = lambda a, b: not torch.equal(a, b)     # noqa: E731
    assert changed(alpha.log_alpha, init.log_alpha) and not changed(alpha.text, init.text)
    assert not changed(alpha.z, init.z) and not changed(alpha.images, init.images)
    assert changed(text.text, init.text) and not changed(text.z, init.z) and not changed(text.images, init.images)
    assert changed(p.z, init.z) and not changed(p.images, init.images)
    assert not os.path.exists(os.path.join(run_dir, "eval", "sets", "ladder-images.pt"))   # = mdw-no-ceo's set
    assert changed(sets(store, run_id, "mdw-no-ceo").images, init.images)


def test_filter_recipe_drops_the_highest_loss_pairs_and_trains_its_own_experts(baselines_run):
    store, run_id = baselines_run
    run_dir = store.run_dir(run_id)
    with open(os.path.join(run_dir, "experts", "filtered", "filter.json")) as f:
        info = json.load(f)
    n = info["kept"] + info["dropped"]
    assert info["fraction"] == 0.4 and info["dropped"] == round(0.4 * n)            # default: the run's η
    assert info["dropped_noisy_fraction"] > info["kept_noisy_fraction"]              # the filter finds noise
    with open(os.path.join(run_dir, "experts", "filtered", "meta.json")) as f:
        assert json.load(f)["kind"] == "filtered"
    kept = set(info["kept_positions"])
    for name in ("filter-mtt-vl", "filter-lors"):
        s = sets(store, run_id, name)
        assert s.meta["experts"] == "filtered"
    lors = sets(store, run_id, "filter-lors")        # LoRS as published (docs/lors.md)
    assert lors.labels == "lors" and lors.meta["loss"] == "lors" and lors.meta["lr_z"] == 0.01
    scores = np.load(os.path.join(run_dir, "dtcl", "scores_plain.npz"))
    dropped = sorted(set(range(n)) - kept)
    assert scores["lossA"][-1][dropped].min() >= scores["lossA"][-1][sorted(kept)].max()


def test_mdw_init_students_equal_mdw_students_at_zero_iterations(tmp_path, monkeypatch):
    monkeypatch.setenv("MDW_CACHE", str(tmp_path / "cache"))
    store, run_id, code = run_tiny(tmp_path, "distill.iterations=0", "evaluate.methods=mdw,mdw-init",
                                   until="evaluate")
    assert code == 0
    rows = rows_of(store, run_id)
    for k in ("IR@1", "TR@1", "IR@5", "TR@5", "mean_recall", "mean_recall_std"):
        assert rows["mdw"][k] == rows["mdw-init"][k], k
    assert rows["mdw"]["protocol"] == rows["mdw-init"]["protocol"]


def test_filter_keep_and_method_names():
    loss = np.array([0.5, 3.0, 0.1, 2.0, 1.0])
    assert filter_keep(loss, 0.4).tolist() == [0, 2, 4]           # the two highest losses dropped
    assert filter_keep(loss, 0.0).tolist() == [0, 1, 2, 3, 4]
    assert split_method("random@adam") == ("random", "adam") and split_method("mdw") == ("mdw", None)
    assert expand_methods(["random", "ladder", "mdw"]) == ["random", "mdw-init", "ladder-alpha", "ladder-text",
                                                           "ladder-p", "ladder-images", "mdw"]
    assert expand_methods(["ladder@adam"])[0] == "mdw-init@adam"
    assert needs_plain(["filter-lors"]) and needs_plain(["mtt-vl@adam"]) and not needs_plain(["ladder", "random"])
    for bad in (["nope"], ["random@sgd"]):
        with pytest.raises(ConfigError, match="evaluate.methods: unknown"):
            EvalConfig(methods=bad).validate()


def test_alpha_start_sets_where_the_step_sizes_begin(baselines_run):
    import dataclasses

    from mdw.config import RunConfig
    from mdw.distill.stage import distill_from_run
    from mdw.inputs import run_inputs
    from mdw.runs.context import RunContext
    store, run_id = baselines_run
    ctx = RunContext(store, run_id)
    cfg = RunConfig.from_dict(ctx.config)
    pairs = run_inputs(ctx.run_dir, cfg).pairs
    for start, want in ((0.1, 0.1), (0.0, cfg.experts.lr)):
        d = dataclasses.replace(cfg.distill, iterations=0, alpha_start=start)
        syn = distill_from_run(ctx.run_dir, pairs, cfg, d, cfg.seed)
        assert torch.allclose(syn.alpha(), torch.full((3,), want))
    with pytest.raises(ConfigError, match="alpha_start"):
        dataclasses.replace(cfg.distill, alpha_start=-1.0).validate()
