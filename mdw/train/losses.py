"""Contrastive losses on a batch of B aligned pairs: logits z (B, B), z_ii the positive
(MDWModel.logits gives z = s / τ).

`infonce_per_pair`  ℓ_i = ½ [CE(z_i·, i) + CE(z_·i, i)]                       (symmetric InfoNCE)
`complementary_per_pair` (RCL, Hu et al. 2023):
                    ℓ_i = −Σ_{j≠i} log(1 − softmax_j(z_i·)_j) − Σ_{j≠i} log(1 − softmax_j(z_·i)_j)
                    L_comp = mean_i ℓ_i, bounded and never pulls a (possibly wrong) positive together.
`soft_contrastive`  symmetric cross-entropy against row-normalised soft targets (METHOD §5).
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
