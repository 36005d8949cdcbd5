"""A short distillation against real expert trajectories lowers the matching loss; CEO masks."""
import numpy as np
import pytest
import torch

from mdw.config import RunConfig, apply_overrides
from mdw.data.prepare import prepare
from mdw.distill.ceo import apply_ceo, ceo_masks
from mdw.distill.distill import distill, init_distilled
from mdw.distill.matching import Student
from mdw.models.presets import build_model
from mdw.train.data import build_tensors
from mdw.train.dtcl import train_experts


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    cfg = apply_overrides(RunConfig(), [
        "data.scenes.n_train=100", "data.scenes.n_dev=10", "data.scenes.n_test=20", "data.image_size=32",
        "data.eta=0.2", "experts.epochs=3", "experts.batch_size=32", "distill.m=8", "distill.syn_steps=2",
        "distill.expert_epochs=1", "distill.max_start_epoch=1", "distill.iterations=12", "distill.ceo_refresh=4",
        "distill.lr_images=0.02", "distill.snapshots=2"])
    p = prepare(cfg.data, cache)
    pairs, _ = build_tensors(p, build_model(cfg.model, 32).text, cache)
    res = train_experts(pairs, None, cfg.experts, cfg.model, 32, seed=0)
    return cfg, pairs, res


def test_short_distillation_lowers_the_matching_loss(trained):
    cfg, pairs, res = trained
    syn = init_distilled(pairs, res.scores["consensus"][-1], cfg.distill, cfg.experts.lr, seed=0)
    start_images = syn.images.clone()
    assert res.scores["consensus"][-1][np.searchsorted(pairs.pair_ids, syn.init_pairs)].min() >= 0.5  # clean init
    losses, snaps = [], []
    traj = [torch.stack(res.tracks[0].buffer)]
    distill(syn, traj, cfg.model, 32, cfg.distill, seed=0, on_iteration=lambda i, m: losses.append(m["L_TM"]),
            on_snapshot=lambda i, s: snaps.append(i))
    assert len(losses) == 12 and snaps == [0, 4, 8, 12]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])      # same start epoch every time: a fixed target
    assert not torch.equal(syn.images, start_images) and 0 <= syn.images.min() and syn.images.max() <= 1
    p = syn.p()
    assert 0 <= p.min() and p.max() <= 1 and p.diagonal().mean() > 0.8


def test_step_sizes_start_at_the_experts_lr_unless_calibrated(trained):
    import dataclasses
    cfg, pairs, res = trained
    traj = [torch.stack(res.tracks[0].buffer)]
    starts = {}
    for mode in ("lr", "auto"):
        syn = init_distilled(pairs, res.scores["consensus"][-1], cfg.distill, cfg.experts.lr, seed=0)
        distill(syn, traj, cfg.model, 32, dataclasses.replace(cfg.distill, iterations=0, alpha_init=mode), seed=0)
        starts[mode] = syn.alpha()
    assert RunConfig().distill.alpha_init == "lr"                     # METHOD §4: α starts at the experts' lr
    assert torch.allclose(starts["lr"], torch.full_like(starts["lr"], cfg.experts.lr))
    assert (starts["auto"] > 0).all() and not torch.allclose(starts["auto"], starts["lr"])


def test_ceo_mask_shape_range_and_gradient_scaling(trained):
    cfg, pairs, res = trained
    syn = init_distilled(pairs, res.scores["consensus"][-1], cfg.distill, cfg.experts.lr, seed=1)
    model = build_model(cfg.model, 32, seed=0)
    student = Student(model)
    assert student.alpha_vector(syn.log_alpha).shape == (model.num_trainable(),)
    masks = ceo_masks(model, syn, res.tracks[0].buffer[1], topk=3)
    assert masks.shape == (8, 1, 32, 32) and masks.min() >= 0 and masks.max() <= 1
    assert (masks.flatten(1).max(1).values > 0.2).all()    # every image has a focus region
    grad = torch.ones_like(syn.images)
    scaled = apply_ceo(grad, masks, floor=0.2)
    assert torch.allclose(scaled, (0.2 + 0.8 * masks).expand_as(grad))
    assert scaled.min() >= 0.2 - 1e-6 and scaled.max() <= 1 + 1e-6   # no pixel frozen, none amplified
