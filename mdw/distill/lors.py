"""LoRS's learned similarity matrix (Xu et al., "Low-Rank Similarity Mining for Multimodal Dataset
Distillation", ICML 2024; docs/lors.md says where each fact comes from).

    S̃ = diag(ω) + (α / r) L Rᵀ                                   (the paper's S̃ = ωI + (α/r) L Rᵀ)

ω (M,) a learned per-pair diagonal weight, initialised to 1; L, R (M, r) learned low-rank factors,
L ~ N(0, 1) and R = 0 at the start (the LoRA initialisation), so S̃ starts as the identity exactly
and only R (and ω) receive a gradient on the first step. α is a fixed scale (LoRS's `--alpha`), r
the rank. S̃ is used as it is, as the target of LoRS's weighted BCE (mdw.train.losses.lors_wbce):
no sigmoid, no clipping, so entries may leave [0, 1] while it is learned.
A minibatch b of the distilled set uses the sub-matrix S̃_bb = diag(ω_b) + (α/r) L_b R_bᵀ.
"""
from __future__ import annotations

import torch


def lors_similarity(w: torch.Tensor, left: torch.Tensor, right: torch.Tensor, scale: float) -> torch.Tensor:
    """S̃ = diag(w) + scale · left @ rightᵀ, with scale = α / r (LoRS, S̃ = ωI + (α/r) L Rᵀ).

    w: (M,) float; left, right: (M, r) float, same dtype and device. Returns (M, M), same dtype.
    Raises ValueError when the shapes disagree.
    """
    if w.dim() != 1 or left.dim() != 2 or left.shape != right.shape or left.shape[0] != w.shape[0]:
        raise ValueError(f"lors_similarity: need w (M,), left and right (M, r); got {tuple(w.shape)}, "
                         f"{tuple(left.shape)}, {tuple(right.shape)}")
    return torch.diag(w) + scale * (left @ right.t())


def lors_scale(alpha: float, rank: int) -> float:
    """The fixed factor α / r of the low-rank term (LoRS's `--alpha` over `--sim_rank`).
    Raises ValueError for rank < 1."""
    if rank < 1:
        raise ValueError(f"lors_scale: rank must be >= 1, got {rank}")
    return float(alpha) / float(rank)


def lors_init(m: int, rank: int, seed: int = 0) -> tuple:
    """The starting factors: ω = 1 (M,), L ~ N(0, 1) (M, r), R = 0 (M, r), float32, CPU; so that
    lors_similarity(ω, L, R, ·) is the identity. Raises ValueError for m < 1 or rank < 1."""
    if m < 1 or rank < 1:
        raise ValueError(f"lors_init: need m >= 1 and rank >= 1, got m={m}, rank={rank}")
    gen = torch.Generator().manual_seed(seed)
    return torch.ones(m), torch.randn(m, rank, generator=gen), torch.zeros(m, rank)
