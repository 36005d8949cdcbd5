"""The distill and evaluate stages on a tiny real run: snapshots, L_TM events, decoded captions,
distilled heatmaps, every method's students in eval/results.json, resume; the student trainer."""
import json
import os

import numpy as np
import pytest
import torch

from helpers import TINY_RUN
from mdw.config import EvalConfig, ModelConfig, RunConfig, apply_overrides
from mdw.distill.synset import DistilledSet
from mdw.evaluate.students import StudentData, _optimizer, evaluate_model, train_student
from mdw.models.presets import build_model
from mdw.pipeline import run_pipeline, stage_names
from mdw.runs.context import run_in_context
from mdw.runs.store import RunStore
from mdw.train.data import RetrievalSplit

METHODS = "random,mtt-vl,lors,mdw,mdw-no-p,expert-dtcl,expert-plain"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    os.environ["MDW_CACHE"] = str(root / "cache")
    cfg = apply_overrides(RunConfig(), TINY_RUN + [f"evaluate.methods={METHODS}", "evaluate.cross_arch=cpu-wide",
                                                   "model.device=cpu"])
    store = RunStore(str(root / "runs"))
    run_id = store.create(cfg.to_dict(), name="tiny-eval")
    assert run_in_context(store, run_id, run_pipeline) == 0
    yield store, run_id, cfg
    os.environ.pop("MDW_CACHE", None)


def test_distill_stage_outputs(tiny_run):
    store, run_id, cfg = tiny_run
    run_dir = store.run_dir(run_id)
    assert store.read_status(run_id)["stages_done"] == stage_names()
    assert stage_names()[3:5] == ["distill", "evaluate"]
    its = json.load(open(os.path.join(run_dir, "distill", "snapshots", "index.json")))["iterations"]
    assert its == [0, 2, 4]
    first = DistilledSet.load(os.path.join(run_dir, "distill", "snapshots", "it_00000.pt"))
    final = DistilledSet.load(os.path.join(run_dir, "distill", "distilled.pt"))
    assert first.m == final.m == 8 and first.images.shape == (8, 3, 32, 32)
    assert not torch.equal(first.images, final.images) and np.array_equal(first.init_pairs, final.init_pairs)
    assert final.meta["experts"] == "dtcl" and final.meta["labels"] == "soft"
    p = final.p()
    assert 0 <= p.min() and p.max() <= 1 and (p.diagonal() > 0.9).all()
    events = store.read_events(run_id, stage="distill")
    # L_TM is the student's distance to the target over the expert's own move: finite and of order 1
    # (the tiny run's 2-epoch experts find no two loss components, so D̃ starts from any pairs: 2.5 at it 1)
    assert [e["step"] for e in events] == [1, 2, 3, 4] and all(0 < e["L_TM"] < 5 for e in events)
    decoded = json.load(open(os.path.join(run_dir, "distill", "decoded.json")))
    from mdw.inputs import run_data
    captions = run_data(run_dir).pairs.captions
    assert decoded["k"] == 3 and len(decoded["rows"]) == 8
    for row in decoded["rows"]:  # T̃ moved little in 4 iterations: its start caption is still nearest
        assert row["nearest"][0]["pair"] == row["init_pair"] and row["nearest"][0]["sim"] > 0.9
        assert row["nearest"][0]["caption"] == captions[row["init_pair"]]
    index = json.load(open(os.path.join(run_dir, "heatmaps", "index.json")))
    assert index["groups"]["distilled"] == 8


def test_evaluate_table_has_every_method_and_arch(tiny_run):
    store, run_id, cfg = tiny_run
    run_dir = store.run_dir(run_id)
    table = json.load(open(os.path.join(run_dir, "eval", "results.json")))
    got = {(r["method"], r["arch"]) for r in table["rows"]}
    students = [m for m in METHODS.split(",") if not m.startswith("expert")]
    assert got == {(m, a) for m in students for a in ("cpu-small", "cpu-wide")} | {
        ("expert-dtcl", "cpu-small"), ("expert-plain", "cpu-small")}
    for r in table["rows"]:
        for k in ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10", "mean_recall"):
            assert 0 <= r[k] <= 100 and r[f"{k}_std"] >= 0
        assert r["seeds"] == (2 if not r["method"].startswith("expert") else {"expert-dtcl": 2, "expert-plain": 1}[r["method"]])
        assert r["mean_recall"] == pytest.approx(np.mean([r[f"{d}R@{k}"] for d in "IT" for k in (1, 5, 10)]))
    sets = {m: DistilledSet.load(os.path.join(run_dir, "eval", "sets", f"{m}.pt")) for m in ("mtt-vl", "lors", "mdw-no-p")}
    assert sets["mtt-vl"].labels == "identity" and sets["mtt-vl"].meta["experts"] == "plain"
    assert sets["lors"].labels == "lors" and sets["lors"].meta["loss"] == "lors" and sets["lors"].u.shape == (8, 4)
    assert sets["lors"].w.shape == (8,) and sets["lors"].sim_scale == 3.0 / 4          # S̃ = diag(ω) + (α/r) L Rᵀ
    assert sets["mdw-no-p"].labels == "identity" and not sets["mtt-vl"].meta["ceo"]
    assert os.path.isfile(os.path.join(run_dir, "eval", "students", "mdw", "seed0.pt"))
    assert table["config"]["M"] == 8 and table["config"]["evaluate"]["seeds"] == 2
    # resume: a finished evaluate is not redone; a new method added later is the only row computed
    mtime = os.path.getmtime(os.path.join(run_dir, "eval", "sets", "lors.pt"))
    with open(os.path.join(run_dir, "config.json")) as f:
        conf = json.load(f)
    conf["evaluate"]["methods"].append("mdw-no-ceo")
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(conf, f)
    store.write_status(run_id, stages_done=stage_names()[:4])
    assert run_in_context(store, run_id, run_pipeline) == 0
    rows = json.load(open(os.path.join(run_dir, "eval", "results.json")))["rows"]
    assert len(rows) == len(table["rows"]) + 2 and rows[:len(table["rows"])] == table["rows"]
    assert os.path.getmtime(os.path.join(run_dir, "eval", "sets", "lors.pt")) == mtime


def _planted(m=6, size=32, g0_dim=384, seed=0):
    """m solid-colour images, each with its own random text feature: a separable set."""
    gen = torch.Generator().manual_seed(seed)
    colours = torch.rand(m, 3, 1, 1, generator=gen)
    images = colours.expand(m, 3, size, size).contiguous()
    return StudentData(images, torch.randn(m, g0_dim, generator=gen), torch.eye(m))


def test_student_learns_a_separable_set_to_full_recall():
    data = _planted()
    split = RetrievalSplit((data.images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8), data.g0,
                           np.arange(data.m))
    cfg = EvalConfig(steps=150, lr=3e-3)
    model = train_student(data, ModelConfig(device="cpu"), 32, cfg, seed=0)
    r = evaluate_model(model, split)
    assert r["IR@1"] == 100.0 and r["TR@1"] == 100.0
    untrained = evaluate_model(build_model(ModelConfig(device="cpu"), 32, seed=10_000), split)
    assert untrained["mean_recall"] < r["mean_recall"]


def test_learned_step_sizes_drive_sgd_per_group():
    data = _planted()
    data.alpha = torch.tensor([0.5, 0.05, 0.005])
    model = build_model(ModelConfig(device="cpu"), 32, seed=0)
    opt = _optimizer(model, data, EvalConfig(optimizer="alpha"))
    assert isinstance(opt, torch.optim.SGD) and [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.05, 0.005])
    assert isinstance(_optimizer(model, data, EvalConfig(optimizer="adam")), torch.optim.Adam)
    assert isinstance(_optimizer(model, data, EvalConfig()), torch.optim.SGD)   # METHOD §8: the learned α
    data.alpha = None                                                           # a coreset has none
    opt = _optimizer(model, data, EvalConfig())
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == EvalConfig().lr


def test_sweep_scores_variants_on_the_dev_split(tiny_run, tmp_path):
    from mdw.bench import sweep
    from mdw.errors import ConfigError
    from mdw.evaluate.methods import coreset_alpha
    from mdw.evaluate.students import from_coreset, from_distilled, random_coreset
    from mdw.inputs import run_data
    from mdw.train.data import build_tensors

    store, run_id, cfg = tiny_run
    run_dir = store.run_dir(run_id)
    variants = sweep.read_variants('{"random": {"coreset": true},'
                                   ' "fast-p": {"distill": {"lr_z": 0.5, "iterations": 2},'
                                   ' "evals": {"alpha": {}, "adam": {"optimizer": "adam"}}}}')
    out = sweep.SweepConfig(run_dir=run_dir, variants=variants, seeds=1, out_dir=str(tmp_path), merge=True)
    rows, paths = sweep.run(out, log=lambda *a: None)
    assert [(r["variant"], r["eval"]) for r in rows] == [("random", "default"), ("fast-p", "alpha"), ("fast-p", "adam")]
    assert rows[0]["iterations"] is None and rows[1]["iterations"] == 2 and rows[1]["L_TM_start"] > 0
    assert 0 < rows[1]["p_diag"] < 1 and rows[1]["L_TM_start"] == rows[2]["L_TM_start"]
    assert rows[0]["image_shift"] is None and 0 < rows[1]["image_shift"] < 100   # the pixels moved, a little
    # the coreset row is exactly a student scored on the dev split (not the test split)
    pairs, dev = build_tensors(run_data(run_dir), build_model(cfg.model, 32, seed=cfg.seed).text,
                               cfg.resolved_cache_dir(), eval_split="dev")   # built here by hand, not via the sweep
    data = from_coreset(pairs, random_coreset(len(pairs), cfg.distill.m, cfg.seed), coreset_alpha(cfg))  # SGD 0.1
    ev = dict(evaluate_model(train_student(data, cfg.model, 32, cfg.evaluate, 0), dev))
    assert rows[0]["mean_recall"] == pytest.approx(ev["mean_recall"]) and len(dev.images) == 10
    again = sweep.SweepConfig(run_dir=run_dir, variants={"random": {"coreset": True}}, seeds=1, out_dir=str(tmp_path),
                              merge=True)
    sweep.write(again, [dict(rows[0], mean_recall=1.0)])
    kept = json.load(open(paths[0]))
    assert sorted((r["variant"], r["eval"], r["mean_recall"] == 1.0) for r in kept) == [
        ("fast-p", "adam", False), ("fast-p", "alpha", False), ("random", "default", True)]
    assert run_dir not in open(paths[1]).read()                    # no machine path in the record
    # each run once in the record, though it wrote a partial table after every variant (an absolute
    # out_dir was stored machine-free and so never matched: one line per partial write before)
    assert [sorted(c["variants"]) for c in json.load(open(paths[1]))["config"]["runs"]] == [["fast-p", "random"], ["random"]]
    # the markdown's Runs lines name each invocation's variants: two sweeps of one run with one note differ
    runs_md = open(paths[2]).read().split("## Runs")[1]
    assert "seeds; random, fast-p." in runs_md and "seeds; random." in runs_md
    clean = sweep.sweep_variant(run_dir, cfg, pairs, dev, "clean", {"coreset": "clean"}, 1)[0]
    start = DistilledSet.load(os.path.join(run_dir, "distill", "snapshots", "it_00000.pt")).init_pairs
    data = from_coreset(pairs, np.searchsorted(pairs.pair_ids, start), coreset_alpha(cfg))   # MDW's start pairs
    assert clean["mean_recall"] == pytest.approx(evaluate_model(train_student(data, cfg.model, 32, cfg.evaluate, 0),
                                                                dev)["mean_recall"])
    curve = sweep.sweep_variant(run_dir, cfg, pairs, dev, "c", {"curve": 2, "distill": {"iterations": 4}}, 1)
    assert [r["iterations"] for r in curve] == [0, 2, 4] and curve[0]["L_TM_end"] is None
    assert curve[2]["distill_seconds"] > 0 and curve[1]["L_TM_end"] > 0
    start = from_distilled(DistilledSet.load(os.path.join(run_dir, "distill", "snapshots", "it_00000.pt")))
    assert curve[0]["mean_recall"] == pytest.approx(evaluate_model(train_student(start, cfg.model, 32, cfg.evaluate, 0),
                                                                   dev)["mean_recall"])   # iteration 0: MDW's start
    frozen = sweep.sweep_variant(run_dir, cfg, pairs, dev, "f", {"distill": {"iterations": 2, "lr_images": 0.0}}, 1)
    assert frozen[0]["image_shift"] == 0.0
    with pytest.raises(ConfigError, match="coreset must be"):
        sweep.sweep_variant(run_dir, cfg, pairs, dev, "x", {"coreset": "nope"}, 1)
    with pytest.raises(ConfigError, match="distill.lr_zz"):
        sweep.read_variants('{"x": {"distill": {"lr_zz": 1}}}')
    with pytest.raises(ConfigError, match="not JSON"):
        sweep.read_variants("{oops")


def test_image_shift_is_the_mean_pixel_change_in_percent_of_the_start_range():
    from mdw.bench.sweep import image_shift

    start = torch.zeros(2, 3, 4, 4)
    start[0, 0, 0, 0] = 2.0                     # range 2
    assert image_shift(start, start + 0.5) == pytest.approx(25.0)
    end = start.clone()
    end[1, 2, 3, 3] = -1.0                      # one of 96 values moves by 1: 1/96 of the range 2
    assert image_shift(start, end) == pytest.approx(100 / 96 / 2)
