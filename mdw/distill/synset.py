"""The distilled set D̃ = (Ṽ, T̃, P̃) with learned student step size(s) α (METHOD §4).

Ṽ: M images in pixels (M, 3, S, S), float, initialised from real images in [0, 1].
T̃: M text features in the frozen encoder's g0 space (M, g0_dim), initialised from captions.
P̃ = sigmoid(Z) ∈ [0,1]^{M×M}, Z = +a on the diagonal and −a elsewhere, so P̃ starts near the identity
(runs: a = 3, METHOD §4, so P̃ = 0.95 / 0.05 and Z sits where sigmoid still responds; a <= 0 here
means a = log(9(M−1)): the row-normalised targets then keep 0.9 on the diagonal, a sharp start).
Label modes: `soft` (Z learned, MDW), `identity` (P̃ = I, hard labels: MTT-VL-style and the "no P̃"
ablation), `lowrank` (P̃ = sigmoid(Z₀ + U Vᵀ) with Z₀ fixed and U, V of rank r learned: our earlier
LoRS approximation), `lors` (LoRS as published: S̃ = diag(ω) + (α/r) L Rᵀ used as the targets without a
sigmoid, ω, L, R learned; mdw/distill/lors.py, docs/lors.md).
α: log step sizes, one per parameter group (here: the image tower, the text projection, the logit
scale), initialised to the experts' learning rate; α = exp(log_alpha) stays positive.
`init_from` records which real pairs the set started from (for decoding and the audit view).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..runs.store import atomic_save
from .lors import lors_init, lors_scale, lors_similarity

GROUPS = ("visual", "text", "logit_scale")


def param_group(name: str) -> str:
    return "visual" if name.startswith("visual.") else "logit_scale" if name == "logit_scale" else "text"


@dataclass
class DistilledSet:
    images: torch.Tensor            # Ṽ (M, 3, S, S)
    text: torch.Tensor              # T̃ (M, g0_dim)
    z: torch.Tensor                 # Z (M, M); P̃ = sigmoid(Z)
    log_alpha: torch.Tensor         # (len(GROUPS),)
    init_pairs: np.ndarray          # (M,) the real pairs Ṽ, T̃ started from
    meta: dict = field(default_factory=dict)
    labels: str = "soft"            # soft | identity | lowrank | lors
    u: Optional[torch.Tensor] = None  # (M, r) low-rank factors (lowrank: U, V; lors: L, R)
    v: Optional[torch.Tensor] = None
    w: Optional[torch.Tensor] = None  # (M,) LoRS's learned diagonal ω (labels == "lors")
    sim_scale: float = 1.0          # LoRS's α / r (labels == "lors")

    @property
    def m(self) -> int:
        return self.images.shape[0]

    def p(self) -> torch.Tensor:
        """The student's targets (M, M): P̃ in [0, 1], or LoRS's S̃ (labels "lors", not bounded)."""
        if self.labels == "identity":
            return torch.eye(self.m, dtype=self.z.dtype, device=self.z.device)
        if self.labels == "lowrank":
            return torch.sigmoid(self.z + self.u @ self.v.t())
        if self.labels == "lors":
            return lors_similarity(self.w, self.u, self.v, self.sim_scale)
        return torch.sigmoid(self.z)

    def label_leaves(self) -> list:
        """The tensors that carry P̃'s learnable part (none for identity labels)."""
        return {"soft": [self.z], "identity": [], "lowrank": [self.u, self.v], "lors": [self.w, self.u, self.v]}[self.labels]

    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def tensors(self) -> list:
        return ([self.images, self.text, self.z, self.log_alpha] + ([self.u, self.v] if self.u is not None else [])
                + ([self.w] if self.w is not None else []))

    def to(self, device) -> "DistilledSet":
        for name in ("images", "text", "z", "log_alpha", "u", "v", "w"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.to(device).detach())
        return self

    def requires_grad_(self, flag: bool = True) -> "DistilledSet":
        for t in self.tensors():
            t.requires_grad_(flag)
        return self

    @classmethod
    def from_real(cls, images_u8: torch.Tensor, g0: torch.Tensor, pair_ids: np.ndarray, lr: float,
                  z_init: float = 0.0, meta: Optional[dict] = None, labels: str = "soft", rank: int = 4,
                  seed: int = 0, lors_alpha: float = 1.0) -> "DistilledSet":
        """Ṽ, T̃ from M real pairs (uint8 images (M, S, S, 3), their captions' g0 features);
        z_init <= 0: a = log(9(M−1)). labels "lors": ω = 1, L ~ N(0, 1), R = 0 (S̃ = I), scale α/r
        with α = lors_alpha, r = rank (lors_init). Raises ValueError for rank < 1 with "lors"."""
        m = len(pair_ids)
        a = z_init if z_init > 0 else math.log(9.0 * max(m - 1, 1))
        z = torch.full((m, m), -a)
        z.fill_diagonal_(a)
        u = v = w = None
        if labels == "lors":
            w, u, v = lors_init(m, rank, seed)
        if labels == "lowrank":  # U Vᵀ starts small, not zero, so both factors get gradients
            gen = torch.Generator().manual_seed(seed)
            u = 0.01 * torch.randn(m, rank, generator=gen)
            v = 0.01 * torch.randn(m, rank, generator=gen)
        return cls(images=images_u8.permute(0, 3, 1, 2).float().div(255.0).contiguous(),
                   text=g0.detach().float().clone(), z=z,
                   log_alpha=torch.full((len(GROUPS),), math.log(lr)),
                   init_pairs=np.asarray(pair_ids, dtype=np.int64), meta=dict(meta or {}), labels=labels, u=u, v=v,
                   w=w, sim_scale=lors_scale(lors_alpha, rank) if labels == "lors" else 1.0)

    def state(self) -> dict:
        return {"images": self.images.detach().cpu(), "text": self.text.detach().cpu(), "z": self.z.detach().cpu(),
                "log_alpha": self.log_alpha.detach().cpu(), "init_pairs": torch.from_numpy(self.init_pairs),
                "meta": self.meta, "labels": self.labels,
                **({"u": self.u.detach().cpu(), "v": self.v.detach().cpu()} if self.u is not None else {}),
                **({"w": self.w.detach().cpu(), "sim_scale": float(self.sim_scale)} if self.w is not None else {})}

    def save(self, path: str) -> None:
        """Write the set atomically. Raises DivergenceError (nothing written) when a tensor holds
        NaN or inf: a diverged set is never stored as if it were a result."""
        from ..train.finite import check_finite
        check_finite(self.tensors(), "distill", f"saving {os.path.basename(path)}", "a tensor of the distilled set",
                     "the set was not written; lower the distillation learning rates")
        state = self.state()
        atomic_save(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str, device: str = "cpu") -> "DistilledSet":
        s = torch.load(path, map_location=device, weights_only=True)
        # u, v (lowrank labels) and w, sim_scale (LoRS labels) are stored only for those label kinds
        return cls(s["images"], s["text"], s["z"], s["log_alpha"], s["init_pairs"].numpy(), s["meta"],
                   s["labels"], s.get("u"), s.get("v"), s.get("w"), float(s.get("sim_scale", 1.0)))

    def images_u8(self) -> np.ndarray:
        """Ṽ as displayable uint8 (M, S, S, 3), clipped to [0, 1]."""
        return (self.images.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def decode_text(text: torch.Tensor, real_g0, k: int = 3, chunk: int = 65536) -> tuple:
    """Nearest real captions of each T̃ row by cosine similarity in g0 space: (indices (M,k) int64,
    sims (M,k) float32). real_g0: (N, g0_dim), a tensor or train.data.Rows over the text cache's
    memmap; read `chunk` rows at a time (a million captions are never gathered at once)."""
    a = F.normalize(text.detach().float(), dim=1)
    n = len(real_g0)
    k = min(k, n)
    best_v = torch.full((a.shape[0], 0), float("-inf"))
    best_i = torch.zeros((a.shape[0], 0), dtype=torch.long)
    for lo in range(0, n, chunk):
        b = F.normalize(real_g0[lo:lo + chunk].float(), dim=1)
        v, i = torch.cat([best_v, a @ b.t()], 1), torch.cat([best_i, torch.arange(lo, lo + len(b)).expand(len(a), -1)], 1)
        top = v.topk(min(k, v.shape[1]), dim=1)
        best_v, best_i = top.values, i.gather(1, top.indices)
    return best_i.numpy(), best_v.numpy()
