"""Grad-CAM of image-text similarities on the image tower's last spatial map (METHOD §6, §7).

One implementation serves CEO (distilled image i against its top-k distilled texts) and the
region-word heatmaps (an image against the projected features of its caption's words):

    maps = gradcam(model, images01, text_emb)                  # (N, K, S, S) in [0, 1]
    maps, s = gradcam_with_scores(model, images01, text_emb)   # and s_nk = cos(f(v_n), t_nk)

For image n and text k: s_nk = cos(f(v_n), t_nk); A = the tower's last spatial map (N, C, h, w)
(`MDWModel.encode_image_with_features`, whose embedding is computed from A);
α_nkc = spatial mean of ∂s_nk/∂A_nc; map_nk = ReLU(Σ_c α_nkc A_nc) (Selvaraju et al. 2017),
upsampled bilinearly to `out_size` and min-max normalised per map (a constant map, e.g. all
zero, becomes 0 everywhere).

Mode: by default the model runs in eval mode for the call (`eval_mode=True`, the previous mode is
restored afterwards). Pass eval mode (or keep the default): in train mode BatchNorm normalises with
the batch's statistics (the map of one image then depends on the other images) and updates its
running statistics as a side effect.

Gradients: only ∂s/∂A is computed (`torch.autograd.grad` with A as the only input), so nothing is
accumulated into the parameters' `.grad`. With `create_graph=True` the maps stay differentiable
w.r.t. the images, the text embeddings and the parameters (for whoever needs second-order terms);
otherwise they are detached.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-8


@contextlib.contextmanager
def eval_mode(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Run the body with `model` in eval mode (when enabled), then restore its previous mode."""
    was = model.training
    if enabled:
        model.eval()
    try:
        yield
    finally:
        if enabled and was:
            model.train(True)


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max to [0, 1] over the last two dims; a constant map becomes all zeros."""
    flat = maps.flatten(-2)
    lo = flat.min(-1, keepdim=True).values
    span = flat.max(-1, keepdim=True).values - lo
    out = torch.where(span > EPS, (flat - lo) / span.clamp_min(EPS), torch.zeros_like(flat))
    return out.view_as(maps)


def cam_from_grads(feats: torch.Tensor, grads: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """(N, C, h, w) map and its gradient -> (N, h, w) Grad-CAM: ReLU(Σ_c mean_hw(grad)_c A_c)."""
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    cam = (alpha * feats).sum(1)
    return F.relu(cam) if relu else cam


def _visual_needs_input_grad(model: nn.Module, images01: torch.Tensor) -> bool:
    """True when neither the pixels nor the tower's parameters require grad (then the map would
    not be in a graph): the pixels are made to require grad so that ∂s/∂A exists."""
    visual = getattr(model, "visual", model)
    return not images01.requires_grad and not any(p.requires_grad for p in visual.parameters())


def gradcam_with_scores(model: nn.Module, images01: torch.Tensor, text_emb: torch.Tensor,
                        out_size: Optional[int] = None, create_graph: bool = False, relu: bool = True,
                        normalise: bool = True, use_eval_mode: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (maps (N, K, S, S), similarities s (N, K)).

    images01: (N, 3, S, S) pixels in [0, 1]; text_emb: (N, K, D) text embeddings in the joint space
    to score against (normalised here; a zero row gives s = 0 and an all-zero map, so callers may
    pad). out_size: the maps' side (default: the images' side). relu=False keeps the signed map
    (then min-max still maps it to [0, 1]); normalise=False returns the raw (upsampled) maps.
    """
    if images01.dim() != 4 or text_emb.dim() != 3 or text_emb.shape[0] != images01.shape[0]:
        raise ValueError(f"gradcam: expected images (N, 3, S, S) and text_emb (N, K, D), got "
                         f"{tuple(images01.shape)} and {tuple(text_emb.shape)}")
    n, k = text_emb.shape[:2]
    size = int(out_size or images01.shape[-1])
    dev = next(model.parameters()).device
    x = images01.to(dev)
    txt = F.normalize(text_emb.to(dev).float(), dim=-1)
    if k == 0 or n == 0:
        return x.new_zeros((n, k, size, size)), x.new_zeros((n, k))
    with eval_mode(model, use_eval_mode), torch.enable_grad():
        if _visual_needs_input_grad(model, x):
            x = x.detach().requires_grad_(True)
        emb, feats = model.encode_image_with_features(x)
        sims = torch.einsum("nd,nkd->nk", emb.float(), txt)
        maps = []
        for j in range(k):
            keep = create_graph or j < k - 1
            (grad,) = torch.autograd.grad(sims[:, j].sum(), feats, retain_graph=keep, create_graph=create_graph)
            maps.append(cam_from_grads(feats if create_graph else feats.detach(), grad, relu))
        cams = torch.stack(maps, 1).float()                                   # (N, K, h, w)
    if tuple(cams.shape[-2:]) != (size, size):
        cams = F.interpolate(cams, size=(size, size), mode="bilinear", align_corners=False)
    if normalise:
        cams = normalise_maps(cams)
    if not create_graph:
        cams, sims = cams.detach(), sims.detach()
    return cams, sims


def gradcam(model: nn.Module, images01: torch.Tensor, text_emb: torch.Tensor, out_size: Optional[int] = None,
            create_graph: bool = False, relu: bool = True, use_eval_mode: bool = True) -> torch.Tensor:
    """(N, K, S, S) Grad-CAM maps in [0, 1] of s(v_n, t_nk); see `gradcam_with_scores`."""
    return gradcam_with_scores(model, images01, text_emb, out_size, create_graph, relu,
                               use_eval_mode=use_eval_mode)[0]
