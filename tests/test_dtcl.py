"""DTCL experts on small real data: detection, determinism, the trajectory buffer, run stages."""
import os

import numpy as np
import pytest
import torch

from mdw.config import RunConfig, apply_overrides
from mdw.data.prepare import prepare
from mdw.models.presets import build_model
from mdw.pipeline import run_pipeline, stage_names
from mdw.runs.context import run_in_context
from mdw.runs.store import RunStore
from mdw.train.data import build_tensors
from mdw.train.dtcl import train_experts
from mdw.train.experts_io import experts_meta, load_buffer, load_expert, load_scores

SMALL = ["data.scenes.n_train=300", "data.scenes.n_dev=20", "data.scenes.n_test=60", "data.image_size=32",
         "experts.batch_size=64"]


def small_cfg(*extra):
    return apply_overrides(RunConfig(), SMALL + list(extra))


@pytest.fixture(scope="module")
def scenes_noisy(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    cfg = small_cfg("data.eta=0.4")
    p = prepare(cfg.data, cache)
    encoder = build_model(cfg.model, 32).text
    pairs, test = build_tensors(p, encoder, cache)
    return cfg, pairs, test


def test_dtcl_separates_noisy_from_clean(scenes_noisy):
    cfg, pairs, test = scenes_noisy
    cfg = apply_overrides(cfg, ["experts.epochs=4"])
    res = train_experts(pairs, test, cfg.experts, cfg.model, 32, seed=0)
    last = res.history[-1]
    assert pairs.is_noisy.mean() == pytest.approx(0.4, abs=0.01)
    assert last["auc"] > 0.85, res.history          # chance is 0.5
    assert last["precision"] > 0.7 and last["recall"] > 0.5
    # both tracks' clean probabilities are probabilities, consensus is their mean
    wa, wb, c = res.scores["wA"][-1], res.scores["wB"][-1], res.scores["consensus"][-1]
    assert 0 <= wa.min() and wa.max() <= 1 and np.allclose(c, (wa + wb) / 2)
    assert [h["mode_A"] for h in res.history] == ["dtcl"] * 4   # the warm-up: the whole loss, w = 1
    # buffer: epoch 0 (initialisation) and after every epoch, per track
    for t in res.tracks:
        assert len(t.buffer) == 5 and t.buffer[0].shape == (t.model.num_trainable(),)
        assert not torch.equal(t.buffer[0], t.buffer[-1])
    assert not torch.equal(res.tracks[0].buffer[0], res.tracks[1].buffer[0])  # different seeds


def test_training_is_deterministic_on_cpu(scenes_noisy):
    cfg, pairs, test = scenes_noisy
    cfg = apply_overrides(cfg, ["experts.epochs=2", "experts.buffer_epochs=1"])
    a = train_experts(pairs, None, cfg.experts, cfg.model, 32, seed=5)
    b = train_experts(pairs, None, cfg.experts, cfg.model, 32, seed=5)
    for ta, tb in zip(a.tracks, b.tracks):
        assert len(ta.buffer) == 2  # epoch 0 and epoch 1 only: buffer_epochs=1
        assert all(torch.equal(x, y) for x, y in zip(ta.buffer, tb.buffer))
    assert np.array_equal(a.scores["consensus"], b.scores["consensus"])


def test_plain_expert_is_one_infonce_track(scenes_noisy):
    cfg, pairs, test = scenes_noisy
    cfg = apply_overrides(cfg, ["experts.epochs=1", "experts.dtcl=false"])
    res = train_experts(pairs, test, cfg.experts, cfg.model, 32, seed=0)
    assert res.kind == "plain" and len(res.tracks) == 1 and res.history[0]["mode_A"] == "infonce"
    assert "wB" not in res.scores and np.array_equal(res.scores["consensus"], res.scores["wA"])


def test_run_stages_resume_and_score(tmp_path, cache_dir):
    store = RunStore(str(tmp_path / "runs"))
    cfg = small_cfg("data.eta=0.3", "experts.epochs=2", "data.scenes.n_train=120")
    run_id = store.create(cfg.to_dict(), name="t")
    body = lambda ctx: run_pipeline(ctx, until="experts")  # noqa: E731
    assert run_in_context(store, run_id, body) == 0
    st = store.read_status(run_id)
    assert st["state"] == "done" and st["stages_done"] == ["data", "experts"]
    assert stage_names()[:2] == ["data", "experts"]
    run_dir = store.run_dir(run_id)
    meta = experts_meta(run_dir)
    assert load_buffer(run_dir, "dtcl", "A").shape == (3, meta["n_params"])
    scores = load_scores(run_dir)
    n = len(scores["pair_ids"])
    assert scores["consensus"].shape == (2, n) and scores["is_noisy"].sum() == int(0.3 * n)
    events = store.read_events(run_id, stage="experts")
    assert [e["step"] for e in events] == [1, 2] and "auc" in events[-1] and "IR@1_A" in events[-1]
    # resume: the finished stages are not redone
    mtime = os.path.getmtime(os.path.join(run_dir, "experts", "dtcl", "buffer_A.pt"))
    assert run_in_context(store, run_id, body) == 0
    assert os.path.getmtime(os.path.join(run_dir, "experts", "dtcl", "buffer_A.pt")) == mtime
    assert len(store.read_events(run_id, stage="experts")) == 2
    # the final expert reloads with the same outputs
    model = load_expert(run_dir, "dtcl", "A", device="cpu")
    assert torch.equal(model.flat_params(), torch.load(os.path.join(run_dir, "experts", "dtcl", "final_A.pt"))["params"])
    # score a hand-made pair list: scenes images saved as files, with their own or another's caption
    from mdw.cli.main import main
    from mdw.data.scenes import make_scenes
    ps = make_scenes(cfg.data.scenes)
    test_imgs = ps.images_in("test")[:6]
    rows = ["image,caption"]
    for k, i in enumerate(test_imgs):
        ps.images.open(int(i), 32).save(tmp_path / f"img{k}.png")
        own = ps.captions[int(np.flatnonzero(ps.true_image == i)[0])]
        other = ps.captions[int(np.flatnonzero(ps.true_image == test_imgs[(k + 1) % 6])[0])]
        rows += [f'img{k}.png,"{own}"', f'img{k}.png,"{other}"']
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "scored.csv"
    assert main(["score", "--run", run_id, "--runs", str(tmp_path / "runs"), "--pairs",
                 str(tmp_path / "pairs.csv"), "--out", str(out)]) == 0
    import csv
    got = list(csv.DictReader(out.open()))
    assert len(got) == 12 and {"similarity", "clean", "flagged", "clean_A", "clean_B"} <= set(got[0])
    assert all(0.0 <= float(r["clean"]) <= 1.0 for r in got)
    own_sim = np.mean([float(r["similarity"]) for r in got[0::2]])
    other_sim = np.mean([float(r["similarity"]) for r in got[1::2]])
    assert own_sim > other_sim


def test_adam_preconditioner_is_kept_with_the_buffer(scenes_noisy):
    cfg, pairs, test = scenes_noisy
    sgd = apply_overrides(cfg, ["experts.epochs=2", "experts.dtcl=false"])
    res = train_experts(pairs, None, sgd.experts, sgd.model, 32, seed=0)
    assert isinstance(res.tracks[0].opt, torch.optim.SGD) and res.tracks[0].opt.defaults["momentum"] == 0.9
    assert res.tracks[0].precond == [] and len(res.tracks[0].buffer) == 3   # SGD experts: no preconditioner
    cfg = apply_overrides(cfg, ["experts.epochs=2", "experts.dtcl=false", "experts.optimizer=adam", "experts.lr=0.001"])
    res = train_experts(pairs, None, cfg.experts, cfg.model, 32, seed=0)
    t = res.tracks[0]
    assert len(t.precond) == len(t.buffer) - 1 == 2
    state = t.opt.state[t.model.trainable_parameters()[0][1]]
    v_hat = state["exp_avg_sq"].flatten() / (1 - 0.999 ** float(state["step"]))
    n = v_hat.numel()
    assert torch.allclose(t.precond[-1][:n], 1 / (v_hat.sqrt() + 1e-8), rtol=1e-5)
    assert (torch.stack(t.precond) > 0).all()


def test_gradient_clipping_bounds_every_expert_step(scenes_noisy):
    cfg, pairs, test = scenes_noisy
    clip, lr, mom = 1e-4, 0.03, 0.9
    cfg = apply_overrides(cfg, ["experts.epochs=1", "experts.dtcl=false", f"experts.grad_clip={clip}",
                                f"experts.lr={lr}", f"experts.momentum={mom}"])
    res = train_experts(pairs, None, cfg.experts, cfg.model, 32, seed=0)
    steps = -(-len(pairs) // cfg.experts.batch_size)
    move = float((res.tracks[0].buffer[1] - res.tracks[0].buffer[0]).norm())
    assert 0 < move <= steps * lr * clip / (1 - mom) * 1.001   # each step moves at most lr·clip/(1−momentum)
    free = apply_overrides(cfg, ["experts.grad_clip=0"])
    res = train_experts(pairs, None, free.experts, free.model, 32, seed=0)
    assert float((res.tracks[0].buffer[1] - res.tracks[0].buffer[0]).norm()) > 10 * move


def test_full_warmup_trusts_every_pair_and_moves_sgd_experts_further(scenes_noisy):
    # L_comp's gradient at a near-uniform softmax is ~1/B of InfoNCE's: alone, it barely moves an SGD expert
    cfg, pairs, test = scenes_noisy
    moves, modes = {}, {}
    for warm in ("comp", "full"):
        c = apply_overrides(cfg, ["experts.epochs=2", "experts.warmup_epochs=1", f"experts.warmup_loss={warm}"])
        res = train_experts(pairs, None, c.experts, c.model, 32, seed=0)
        moves[warm] = float((res.tracks[0].buffer[1] - res.tracks[0].buffer[0]).norm())
        modes[warm] = [h["mode_A"] for h in res.history]
    assert modes == {"comp": ["comp", "dtcl"], "full": ["dtcl", "dtcl"]}
    assert moves["full"] > 3 * moves["comp"] > 0
    with pytest.raises(Exception, match="warmup_loss"):
        small_cfg("experts.warmup_loss=plain")
