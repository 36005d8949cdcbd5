"""Students trained from scratch on M pairs (a distilled set or a coreset), METHOD §8.

A `StudentData` is what a student learns from: images, g0 text features, targets P ∈ [0,1]^{M×M}
(identity for a coreset, P̃ for a distilled set), the loss, and optionally learned step sizes α.
Every student trains for the same number of steps and is evaluated at its last step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..config import EvalConfig, ModelConfig
from ..distill.synset import GROUPS, DistilledSet, param_group
from ..models.model import MDWModel
from ..models.presets import build_model, model_identity
from ..runs.store import atomic_save
from ..train.data import PairTensors, RetrievalSplit, embed_split, to_float_images
from ..train.finite import check_finite, lower_lr_hint
from ..train.losses import loss_function
from .retrieval import recall_at_k


@dataclass
class StudentData:
    images: torch.Tensor              # (M, 3, S, S) float in [0, 1]
    g0: torch.Tensor                  # (M, g0_dim)
    targets: torch.Tensor             # (M, M): in [0, 1], except LoRS's S̃ (labels=lors), which may leave it
    loss: str = "soft"                # soft | wbce | lors (mdw.train.losses.loss_function)
    alpha: Optional[torch.Tensor] = None  # (len(GROUPS),) SGD step sizes per parameter group
    learned_alpha: bool = False       # alpha was learned by distillation (else a coreset's fixed lr)

    @property
    def m(self) -> int:
        return self.images.shape[0]


def from_distilled(syn: DistilledSet, loss: str = "soft") -> StudentData:
    """A distilled set as student data. Raises DivergenceError when the set holds NaN or inf (a set
    written before sets were checked on save)."""
    check_finite(syn.tensors(), "evaluate", "reading the distilled set", "a tensor of the distilled set",
                 "distil again with lower learning rates")
    with torch.no_grad():
        return StudentData(syn.images.detach().clamp(0, 1).cpu(), syn.text.detach().cpu(), syn.p().detach().cpu(),
                           loss, syn.alpha().detach().cpu(), learned_alpha=True)


def from_coreset(pairs: PairTensors, positions: np.ndarray, alpha: Optional[torch.Tensor] = None) -> StudentData:
    """M real training pairs as they are (noisy ones included), with identity labels; `alpha`
    (len(GROUPS),): the per-group SGD step sizes of the one student protocol (None: Adam)."""
    idx = torch.as_tensor(np.asarray(positions), dtype=torch.long)
    images = to_float_images(pairs.images[pairs.pair_image[idx]], torch.device("cpu"))
    return StudentData(images, pairs.g0[idx].float(), torch.eye(len(idx)), alpha=alpha)


def random_coreset(n_pairs: int, m: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n_pairs, size=m, replace=False))


def student_alpha(data: StudentData, cfg: EvalConfig) -> torch.Tensor:
    """(len(GROUPS),) the SGD step sizes the students take: a distilled set's learned α times
    evaluate.alpha_scale, a coreset's lr as it is. Raises ValueError when `data` has no α."""
    if data.alpha is None:
        raise ValueError("student_alpha: this student data has no step sizes (Adam students)")
    return data.alpha * cfg.alpha_scale if data.learned_alpha else data.alpha


def _optimizer(model: MDWModel, data: StudentData, cfg: EvalConfig) -> torch.optim.Optimizer:
    named = model.trainable_parameters()
    if cfg.optimizer == "alpha" and data.alpha is not None:
        alpha = student_alpha(data, cfg)
        groups = {g: [] for g in GROUPS}
        for n, p in named:
            groups[param_group(n)].append(p)
        return torch.optim.SGD([{"params": ps, "lr": float(alpha[GROUPS.index(g)])}
                                for g, ps in groups.items() if ps], lr=cfg.lr)
    return torch.optim.Adam([p for _, p in named], lr=cfg.lr)


def train_student(data: StudentData, model_cfg: ModelConfig, image_size: int, cfg: EvalConfig,
                  seed: int) -> MDWModel:
    """A fresh model (seeded init) trained for cfg.steps steps on `data`; returned in eval mode."""
    model = build_model(model_cfg, image_size, seed=10_000 + seed)
    dev = model.device
    images, g0, targets = data.images.to(dev), data.g0.to(dev), data.targets.to(dev)
    opt = _optimizer(model, data, cfg)
    loss_fn = loss_function(data.loss)
    gen = torch.Generator().manual_seed(seed)
    bs = cfg.batch_size if 0 < cfg.batch_size < data.m else data.m
    model.train()
    for step in range(cfg.steps):
        b = torch.randperm(data.m, generator=gen)[:bs].to(dev) if bs < data.m else torch.arange(data.m, device=dev)
        z = model.logits(images[b], g0[b])
        loss = loss_fn(z.float(), targets[b][:, b])
        check_finite(loss, "evaluate", f"student seed {seed}, step {step + 1}", "the student's training loss",
                     _student_hint(data, cfg))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    check_finite([p for _, p in model.trainable_parameters()], "evaluate", f"student seed {seed}, after {cfg.steps} steps",
                 "a student parameter", _student_hint(data, cfg))
    return model.eval()


def _student_hint(data: StudentData, cfg: EvalConfig) -> str:
    if cfg.optimizer == "alpha" and data.alpha is not None and data.learned_alpha:
        scaled = f" × evaluate.alpha_scale {cfg.alpha_scale:g}" if cfg.alpha_scale != 1 else ""
        return (f"the students step at the set's learned α ({', '.join(f'{a:.3g}' for a in data.alpha.tolist())})"
                f"{scaled}; distil with a lower distill.lr_alpha, "
                f"{'lower evaluate.alpha_scale, ' if scaled else ''}or train students by Adam (evaluate.optimizer=adam)")
    if cfg.optimizer == "alpha" and data.alpha is not None:
        key = "evaluate.coreset_lr_groups" if cfg.coreset_lr_groups else "evaluate.coreset_lr"
        return lower_lr_hint((key, float(data.alpha.max())))
    return lower_lr_hint(("evaluate.lr", cfg.lr))


def evaluate_model(model: MDWModel, test: RetrievalSplit) -> dict:
    img, txt = embed_split(model, test)
    return recall_at_k(img, txt, test.caption_image)


def mean_std(results: list) -> dict:
    """{metric: mean, metric_std: std} over seeds (population std, 0 for one seed)."""
    out = {}
    for k in results[0]:
        vals = np.array([r[k] for r in results], dtype=np.float64)
        out[k] = float(vals.mean())
        out[f"{k}_std"] = float(vals.std())
    return out


def save_student(path: str, model: MDWModel, model_cfg: ModelConfig, image_size: int) -> None:
    """The format `mdw.evaluate.index.load_model` reads (student:<method>[:<seed>])."""
    state = {"params": model.flat_params().cpu(), "buffers": model.flat_buffers().cpu(),
             "preset": model.preset, "embed_dim": int(model_cfg.embed_dim), "model": model_identity(model_cfg),
             "image_size": int(image_size)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_save(path, lambda tmp: torch.save(state, tmp))
