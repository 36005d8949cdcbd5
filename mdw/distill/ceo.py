"""CEO, correspondence-enhanced optimisation (METHOD §6): focus pixel updates on the regions that
carry the image-text correspondence.

For distilled image i: its top-k texts j by P̃_i·, Grad-CAM maps M_ij of s(Ṽ_i, T̃_j) on the tower's
last spatial map (the student at θ̂_0), aggregated M_i = Σ_j P̃_ij M_ij / Σ_j P̃_ij; the pixel
gradient becomes (λ + (1 − λ) M_i) ⊙ ∇Ṽ_i, so no pixel is frozen (λ = the floor).
BatchNorm uses the distilled batch's statistics (the buffer keeps parameters, not running stats).
"""
from __future__ import annotations

import torch

from ..models.gradcam import gradcam
from .synset import DistilledSet


def ceo_masks(model, syn: DistilledSet, theta0: torch.Tensor, topk: int = 3) -> torch.Tensor:
    """(M, 1, S, S) masks in [0, 1] for the student at θ̂_0 (loaded into `model`)."""
    model.load_flat_params(theta0)
    with torch.no_grad():
        w, j = syn.p().topk(min(topk, syn.m), dim=1)                          # (M, k)
        t = model.encode_text_g0(syn.text[j.reshape(-1)]).view(syn.m, j.shape[1], -1)
    maps = gradcam(model, syn.images.detach().clamp(0, 1), t, use_eval_mode=False)  # (M, k, S, S)
    agg = (w[:, :, None, None] * maps).sum(1) / w.sum(1).clamp_min(1e-8)[:, None, None]
    return agg[:, None].detach()


def apply_ceo(grad: torch.Tensor, masks: torch.Tensor, floor: float) -> torch.Tensor:
    """∇Ṽ ← (λ + (1 − λ) M) ⊙ ∇Ṽ."""
    return grad * (floor + (1.0 - floor) * masks)
