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


def _steps(optimizer: str, scale: torch.Tensor, n: int = 3) -> tuple:
    """(the pixels' move, the gradient) after n steps of `optimisers` with the same gradient (each
    pixel's between 5e-4 and 1.5e-3 in size, so Adam's ε does not matter), rescaled per pixel by
    `scale` (what CEO does), from a fixed start."""
    import dataclasses

    from mdw.distill.distill import optimisers
    from mdw.distill.synset import DistilledSet

    gen = torch.Generator().manual_seed(0)
    syn = DistilledSet.from_real((torch.rand(4, 8, 8, 3, generator=gen) * 255).to(torch.uint8), torch.randn(4, 6),
                                 np.arange(4), 0.01).requires_grad_(True)
    start = syn.images.detach().clone()
    grad = torch.randn(start.shape, generator=gen).sign() * (0.5 + torch.rand(start.shape, generator=gen)) * 1e-3
    cfg = dataclasses.replace(RunConfig().distill, images_optimizer=optimizer, lr_images=1e-3 if optimizer == "adam" else 1.0)
    opts = optimisers(syn, cfg)
    for _ in range(n):
        for t in syn.tensors():
            t.grad = torch.zeros_like(t)
        syn.images.grad = grad * scale
        for opt in opts:
            opt.step()
    return syn.images.detach() - start, grad


def test_ceo_rescaling_shapes_an_sgd_pixel_step_and_barely_an_adam_one():
    """Adam divides each pixel's step by its own gradient scale, so a fixed per-pixel rescaling (CEO
    between mask refreshes, METHOD §6) leaves the step as it was; SGD's step follows it."""
    scale = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.2   # λ = 0.2 .. 1
    (adam, _), (adam_ceo, _) = _steps("adam", torch.ones(1)), _steps("adam", scale)
    assert torch.allclose(adam, adam_ceo, rtol=1e-4)                      # CEO changes nothing (up to Adam's ε)
    (sgd, grad), (sgd_ceo, _) = _steps("sgd", torch.ones(1)), _steps("sgd", scale)
    assert torch.allclose(sgd_ceo, sgd * scale, rtol=1e-4)               # CEO sets each pixel's share
    # SGD with momentum 0.5 at lr 1: three equal gradients move a pixel by g·(1 + 1.5 + 1.75)
    assert torch.allclose(sgd, -grad * 4.25, rtol=1e-4)


def test_pixels_by_sgd_distil_and_a_bad_optimiser_is_named(trained):
    import dataclasses

    from mdw.errors import ConfigError

    cfg, pairs, res = trained
    syn = init_distilled(pairs, res.scores["consensus"][-1], cfg.distill, cfg.experts.lr, seed=0)
    start = syn.images.clone()
    d = dataclasses.replace(cfg.distill, images_optimizer="sgd", lr_images=100.0, iterations=4)
    distill(syn, [torch.stack(res.tracks[0].buffer)], cfg.model, 32, d, seed=0)
    assert not torch.equal(syn.images, start) and 0 <= syn.images.min() and syn.images.max() <= 1
    with pytest.raises(ConfigError, match="images_optimizer: unknown 'lbfgs'"):
        dataclasses.replace(cfg.distill, images_optimizer="lbfgs").validate()
    with pytest.raises(ConfigError, match="images_momentum"):
        dataclasses.replace(cfg.distill, images_momentum=1.0).validate()
