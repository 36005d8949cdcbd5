"""The distillation loop: pick an expert and a start epoch, match N student steps on D̃ to K expert
epochs (mdw/distill/matching.py), rescale the pixel gradient with CEO, one Adam step on Ṽ, T̃, Z, α.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ..config import DistillConfig, ModelConfig
from ..models.presets import build_model
from ..train.data import PairTensors
from ..train.finite import check_finite, lower_lr_hint
from .ceo import apply_ceo, ceo_masks
from .matching import Student, match_adjoint
from .synset import DistilledSet


def choose_init_pairs(consensus: Optional[np.ndarray], n_pairs: int, m: int, how: str, seed: int) -> np.ndarray:
    """M training pairs (positions in PairTensors) to start from: among those DTCL scores clean."""
    rng = np.random.default_rng(seed)
    pool = np.arange(n_pairs)
    if how == "clean" and consensus is not None:
        clean = np.flatnonzero(consensus >= 0.5)
        pool = clean if len(clean) >= m else np.argsort(-consensus)[:m]
    return np.sort(rng.choice(pool, size=m, replace=False))


def init_distilled(pairs: PairTensors, consensus: Optional[np.ndarray], cfg: DistillConfig, lr: float,
                   seed: int) -> DistilledSet:
    pos = choose_init_pairs(consensus, len(pairs), cfg.m, cfg.init, seed)
    idx = torch.from_numpy(pos)
    return DistilledSet.from_real(pairs.images[pairs.pair_image[idx]], pairs.g0[idx], pairs.pair_ids[pos], lr,
                                  cfg.z_init, meta={"init": cfg.init, "positions": pos.tolist()},
                                  labels=cfg.labels, rank=cfg.rank, seed=seed, lors_alpha=cfg.lors_alpha)


def snapshot_iterations(cfg: DistillConfig) -> set:
    n = max(cfg.snapshots, 0)
    its = {0, cfg.iterations}
    if n and cfg.iterations:
        its |= {int(round(cfg.iterations * (k + 1) / (n + 1))) for k in range(n)}
    return its


@dataclass
class Trajectory:
    """One expert's buffer θ*_0..θ*_E and, optionally, its Adam preconditioner after each epoch."""
    params: torch.Tensor                       # (E + 1, P)
    precond: Optional[torch.Tensor] = None     # (E, P): row s is the scaling during epoch s + 1

    def scale(self, s: int, cfg: DistillConfig, device) -> Optional[torch.Tensor]:
        if not cfg.precondition or self.precond is None:
            return None
        return self.precond[s].to(device)


def as_trajectory(t) -> Trajectory:
    return t if isinstance(t, Trajectory) else Trajectory(t)


def pick_segment(buf: torch.Tensor, cfg: DistillConfig, rng: np.random.Generator) -> tuple:
    """(start epoch s < max_start_epoch, K): the segment θ*_s → θ*_{s+K} of one expert's buffer.
    A buffer shorter than K + 1 epochs (a very short expert run) matches what it has."""
    epochs = buf.shape[0] - 1
    if epochs < 1:
        raise ValueError("distill: the expert buffer holds no epoch after the start")
    k = min(cfg.expert_epochs, epochs)
    top = max(1, min(cfg.max_start_epoch, epochs - k + 1))
    return int(rng.integers(0, top)), k


@torch.no_grad()
def _group_norms(student: Student, vec: torch.Tensor) -> torch.Tensor:
    from .synset import GROUPS
    sq = torch.zeros(len(GROUPS), dtype=vec.dtype, device=vec.device)
    return sq.index_add_(0, student.group_of.to(vec.device), vec * vec).sqrt()


def calibrate_alpha(student: Student, syn: DistilledSet, trajectories: list, cfg: DistillConfig,
                    rng: np.random.Generator, samples: int = 3) -> None:
    """Start α per group at the step size that brings N student steps closest to the expert's K-epoch
    move (ours): an expert's epoch is many momentum (or Adam) steps on other data, so its lr is a
    poor start for N plain SGD steps on M pairs."""
    ratios = []
    for _ in range(samples):
        traj = trajectories[int(rng.integers(len(trajectories)))]
        buf = traj.params
        s, k = pick_segment(buf, cfg, rng)
        theta = buf[s].to(syn.images.device).clone().requires_grad_(True)
        g = torch.autograd.grad(student.loss(theta, syn, torch.arange(syn.m, device=theta.device)), theta)[0]
        scale = traj.scale(s, cfg, theta.device)
        if scale is not None:
            g = g * scale       # the step direction of a preconditioned student
        move = buf[s + k].to(theta.device) - buf[s].to(theta.device)
        # the step size whose N plain steps along -g land closest to the target, per group
        # (floored at a tenth of the norm ratio, so a group the gradient does not point along still moves)
        along = torch.zeros_like(syn.log_alpha).index_add_(0, student.group_of.to(g.device), -g * move)
        gg = _group_norms(student, g).clamp_min(1e-12) ** 2
        ratio = _group_norms(student, move) / (cfg.syn_steps * gg.sqrt())
        ratios.append(torch.maximum(along / (cfg.syn_steps * gg), 0.1 * ratio))
    alpha = torch.stack(ratios).median(0).values.clamp_min(1e-8)
    syn.log_alpha.data.copy_(alpha.log())


def check_distilled(syn: DistilledSet, cfg: DistillConfig, at: str) -> None:
    """Stop the stage (DivergenceError) when α, Ṽ, T̃ or P̃'s learned part holds NaN or inf, naming
    the quantity and its learning rate."""
    check_finite(syn.log_alpha.exp(), "distill", at, "the student step size α", lower_lr_hint(("distill.lr_alpha", cfg.lr_alpha)))
    check_finite(syn.images, "distill", at, "the synthetic images Ṽ", lower_lr_hint(("distill.lr_images", cfg.lr_images)))
    check_finite(syn.text, "distill", at, "the synthetic texts T̃", lower_lr_hint(("distill.lr_text", cfg.lr_text)))
    check_finite(syn.label_leaves(), "distill", at, "the soft labels P̃", lower_lr_hint(("distill.lr_z", cfg.lr_z)))


def optimisers(syn: DistilledSet, cfg: DistillConfig) -> list:
    """The optimisers of one distillation: Adam on T̃ (lr_text), α (lr_alpha) and P̃'s leaves (lr_z);
    the pixels Ṽ in the same Adam (lr_images) or, with images_optimizer "sgd", by SGD with momentum
    images_momentum at lr_images (MTT, Cazenavette et al. 2022; LoRS: SGD, momentum 0.5). With SGD a
    pixel's step is proportional to its gradient, so CEO's rescaling (METHOD §6) shapes the step."""
    groups = [{"params": [syn.text], "lr": cfg.lr_text}, {"params": [syn.log_alpha], "lr": cfg.lr_alpha}]
    if syn.label_leaves():
        groups.append({"params": syn.label_leaves(), "lr": cfg.lr_z})
    if cfg.images_optimizer == "sgd":
        return [torch.optim.Adam(groups), torch.optim.SGD([syn.images], lr=cfg.lr_images, momentum=cfg.images_momentum)]
    return [torch.optim.Adam([{"params": [syn.images], "lr": cfg.lr_images}] + groups)]


def distill(syn: DistilledSet, trajectories: list, model_cfg: ModelConfig, image_size: int, cfg: DistillConfig,
            seed: int = 0, progress: Optional[Callable[[float, str], None]] = None,
            on_iteration: Optional[Callable[[int, dict], None]] = None,
            on_snapshot: Optional[Callable[[int, DistilledSet], None]] = None) -> DistilledSet:
    """Optimise `syn` in place against `trajectories` (Trajectory, or (epochs, P) buffers); returns it."""
    trajectories = [as_trajectory(t) for t in trajectories]
    model = build_model(model_cfg, image_size, seed=seed)   # the architecture; θ comes from the buffers
    dev = model.device
    syn.to(dev).requires_grad_(True)
    student = Student(model, cfg.loss)
    opts = optimisers(syn, cfg)
    rng = np.random.default_rng(seed)
    bs = cfg.syn_batch or syn.m
    snaps = snapshot_iterations(cfg)
    if cfg.alpha_init == "auto" and not syn.meta.get("alpha_calibrated"):
        calibrate_alpha(student, syn, trajectories, cfg, rng)
        syn.meta["alpha_calibrated"] = True
    check_distilled(syn, cfg, "the start (iteration 0)")
    masks = None
    if on_snapshot and 0 in snaps:
        on_snapshot(0, syn)
    for it in range(1, cfg.iterations + 1):
        t0 = time.time()
        traj = trajectories[int(rng.integers(len(trajectories)))]
        s, k = pick_segment(traj.params, cfg, rng)
        start, target = traj.params[s].to(dev), traj.params[s + k].to(dev)
        batches = [torch.from_numpy(rng.permutation(syn.m)[:bs]).to(dev) for _ in range(cfg.syn_steps)]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss = match_adjoint(student, syn, start, target, batches, traj.scale(s, cfg, dev))
        check_finite(loss, "distill", f"iteration {it}", "the matching loss L_TM",
                     lower_lr_hint(("distill.lr_alpha", cfg.lr_alpha), ("distill.lr_images", cfg.lr_images)))
        if cfg.ceo:
            if masks is None or (it - 1) % max(cfg.ceo_refresh, 1) == 0:
                masks = ceo_masks(model, syn, start, cfg.ceo_topk)
            syn.images.grad = apply_ceo(syn.images.grad, masks, cfg.ceo_floor)
        for opt in opts:
            opt.step()
        with torch.no_grad():
            syn.images.clamp_(0.0, 1.0)   # the synthetic images stay images (ours)
        check_distilled(syn, cfg, f"iteration {it}")
        metrics = {"L_TM": loss, "start_epoch": s, "alpha": syn.alpha().mean().item(), "sec": time.time() - t0}
        if on_iteration:
            on_iteration(it, metrics)
        if progress:
            progress(it / cfg.iterations, f"iteration {it}/{cfg.iterations}, L_TM {loss:.4f}")
        if on_snapshot and it in snaps:
            on_snapshot(it, syn)
    return syn.requires_grad_(False)
