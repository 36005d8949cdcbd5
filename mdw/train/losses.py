"""Contrastive losses on a batch of B aligned pairs: logits z (B, B), z_ii the positive
(MDWModel.logits gives z = s / τ).

`infonce_per_pair`  ℓ_i = ½ [CE(z_i·, i) + CE(z_·i, i)]                       (symmetric InfoNCE)
`complementary_per_pair` (RCL, Hu et al. 2023):
                    ℓ_i = −Σ_{j≠i} log(1 − softmax_j(z_i·)_j) − Σ_{j≠i} log(1 − softmax_j(z_·i)_j)
                    L_comp = mean_i ℓ_i, bounded and never pulls a (possibly wrong) positive together.
`soft_contrastive`  symmetric cross-entropy against row-normalised soft targets (METHOD §5).
`wbce`              our earlier LoRS-style BCE, entries weighted by their P mass (kept for old sets).
`lors_wbce`         LoRS's weighted BCE as published (Xu et al. 2024; docs/lors.md).
`loss_function(name)` maps a config's loss name (soft | wbce | lors) to one of these.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def infonce_per_pair(z: torch.Tensor) -> torch.Tensor:
    target = torch.arange(z.shape[0], device=z.device)
    return 0.5 * (F.cross_entropy(z, target, reduction="none") + F.cross_entropy(z.t(), target, reduction="none"))


def infonce(z: torch.Tensor) -> torch.Tensor:
    return infonce_per_pair(z).mean()


def _one_side_complementary(z: torch.Tensor, eps: float) -> torch.Tensor:
    p = z.float().softmax(dim=1)
    log_not = torch.log1p(-p.clamp(max=1.0 - eps))
    off = ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    return -(log_not * off).sum(dim=1)


def complementary_per_pair(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return _one_side_complementary(z, eps) + _one_side_complementary(z.t(), eps)


def complementary(z: torch.Tensor) -> torch.Tensor:
    return complementary_per_pair(z).mean()


def weighted_infonce(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ w_n ℓ_n / Σ w_n (0 when the partner trusts no pair of the batch)."""
    total = w.sum()
    if total <= 0:
        return z.sum() * 0.0
    return (w * infonce_per_pair(z)).sum() / total


def soft_contrastive(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Symmetric CE between softmax(z) and the row- (and column-) normalised targets P ∈ [0,1]."""
    rows = targets / targets.sum(dim=1, keepdim=True).clamp_min(1e-8)
    cols = targets.t() / targets.t().sum(dim=1, keepdim=True).clamp_min(1e-8)
    return 0.5 * (-(rows * z.log_softmax(dim=1)).sum(1).mean() - (cols * z.t().log_softmax(dim=1)).sum(1).mean())


def wbce(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """LoRS-style weighted BCE between sigmoid(z) and soft targets P: positives (P mass) and
    negatives (1 − P mass) each averaged, so the few positives weigh as much as the many negatives."""
    pos = targets / targets.sum().clamp_min(1e-8)
    neg = (1 - targets) / (1 - targets).sum().clamp_min(1e-8)
    return -(pos * F.logsigmoid(z)).sum() - (neg * F.logsigmoid(-z)).sum()


def lors_wbce(z: torch.Tensor, targets: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LoRS's weighted BCE (Xu et al., ICML 2024, the wBCE loss; their code's
    MultilabelContrastiveLoss "WBCE"): with p = sigmoid(z) and S the learned similarity targets,
        ℓ_ij = −S_ij log(p_ij + ε) − (1 − S_ij) log(1 − p_ij + ε),   ε = 1e-6 (as in their code)
        L = ½ [ mean of ℓ_ij over positives (S_ij > 0.5) + mean of ℓ_ij over negatives (S_ij <= 0.5) ]
    The masks come from S (no gradient through them); S itself is not clipped to [0, 1]. ε is kept
    on purpose: once S̃ leaves [0, 1], ℓ without it is unbounded below as |z| grows (our students
    can raise their logit scale); with it ℓ stays above about −(S − 1) log(1/ε) for S > 1 and
    S log(1/ε) for S < 0. An empty positive or negative set contributes 0.

    z: (B, B) float logits (z_ij = s_ij / τ); targets: (B, B) float S. Returns a 0-dim tensor.
    Raises ValueError when the shapes differ.
    """
    if z.shape != targets.shape:
        raise ValueError(f"lors_wbce: logits {tuple(z.shape)} and targets {tuple(targets.shape)} differ")
    p = torch.sigmoid(z)
    ell = -targets * torch.log(p + eps) - (1 - targets) * torch.log(1 - p + eps)
    pos = (targets > 0.5).detach()
    zero = ell.new_zeros(())
    pos_mean = torch.where(pos, ell, zero).sum() / pos.sum().clamp_min(1)
    neg_mean = torch.where(~pos, ell, zero).sum() / (~pos).sum().clamp_min(1)
    return 0.5 * (pos_mean + neg_mean)


LOSSES = {"soft": soft_contrastive, "wbce": wbce, "lors": lors_wbce}


def loss_function(name: str):
    """The student loss of a config name: soft | wbce | lors. Raises ValueError for another name."""
    if name not in LOSSES:
        raise ValueError(f"unknown student loss {name!r}; known: {', '.join(LOSSES)}")
    return LOSSES[name]
