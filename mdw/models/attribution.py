"""Pixel attributions of image-text similarities: integrated gradients (Sundararajan et al., 2017).

    maps, sims = integrated_gradients(model, images01, text_emb, steps=8)

For an image x, a text direction t and a baseline image x₀, the attribution of pixel i is (eq. 1 of
the paper, with a midpoint Riemann sum of `steps` terms)

    IG_i(x) = (x_i − x₀_i) · (1/steps) Σ_{m=1..steps} ∂s(x₀ + a_m (x − x₀), t) / ∂x_i,   a_m = (m − ½) / steps

where s(x, t) = cos(f(x), t) is the model's image-text similarity. The attributions sum (over every
pixel and channel) to s(x, t) − s(x₀, t) up to the Riemann sum's error (the completeness axiom).
The baseline is a plain image in each image's background colour (the median of its border pixels):
what the image would be without its content. The map of a pixel is the positive part of its
attribution summed over the colour channels (the pixels that raise s). Unlike Grad-CAM it needs no
spatial feature map, so it works for any differentiable image tower (CNN or ViT) at the input's
resolution.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gradcam import blur_maps, eval_mode, normalise_maps


def border_colour(images01: torch.Tensor) -> torch.Tensor:
    """(N, 3, 1, 1): the median colour of each image's one-pixel border. images01: (N, 3, S, S)."""
    x = images01
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, 1:-1, 0], x[:, :, 1:-1, -1]], -1)   # (N, 3, 4S - 4)
    return border.median(-1).values[:, :, None, None]


def integrated_gradients(model: nn.Module, images01: torch.Tensor, text_emb: torch.Tensor, steps: int = 8,
                         out_size: Optional[int] = None, blur: float = 0.0,
                         baseline: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (maps (N, K, S, S) float32 in [0, 1], similarities s(x, t) (N, K) float32).

    images01: (N, 3, S, S) pixels in [0, 1]; text_emb: (N, K, D) directions in the joint space
    (normalised here; a zero row gives an all-zero map, so callers may pad). steps: terms of the
    Riemann sum (≥ 1). out_size: the maps' side (default the images'; bilinear). blur: σ in pixels
    of a Gaussian blur of each map before it is scaled to [0, 1]. baseline: (N, 3, S, S) or
    broadcastable; default `border_colour`. The model runs in eval mode (restored afterwards) and its
    parameters get no gradients. Raises ValueError on mismatched shapes or steps < 1.
    """
    if images01.dim() != 4 or text_emb.dim() != 3 or text_emb.shape[0] != images01.shape[0]:
        raise ValueError(f"integrated_gradients: expected images (N, 3, S, S) and text_emb (N, K, D), got "
                         f"{tuple(images01.shape)} and {tuple(text_emb.shape)}")
    if steps < 1:
        raise ValueError(f"integrated_gradients: steps must be >= 1, got {steps}")
    n, k = text_emb.shape[:2]
    size = int(out_size or images01.shape[-1])
    if n == 0 or k == 0:
        return images01.new_zeros((n, k, size, size)), images01.new_zeros((n, k))
    maps = attributions(model, images01, text_emb, steps, baseline).clamp_min(0)
    if size != maps.shape[-1]:
        maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
    if blur > 0:
        maps = blur_maps(maps, blur)
    dev = next(model.parameters()).device
    with eval_mode(model), torch.no_grad():
        sims = torch.einsum("nd,nkd->nk", model.encode_image(images01.to(dev).float()).float(),
                            F.normalize(text_emb.to(dev).float(), dim=-1))
    return normalise_maps(maps), sims


def attributions(model: nn.Module, images01: torch.Tensor, text_emb: torch.Tensor, steps: int = 8,
                 baseline: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N, K, S, S) float32: the signed integrated-gradients attribution summed over colour channels,
    before the positive part and scaling (for checks of completeness); see `integrated_gradients`."""
    dev = next(model.parameters()).device
    x = images01.to(dev).float()
    txt = F.normalize(text_emb.to(dev).float(), dim=-1)
    x0 = (border_colour(x) if baseline is None else baseline.to(dev).float()).expand_as(x)
    delta = x - x0
    total = torch.zeros((x.shape[0], txt.shape[1]) + tuple(x.shape[2:]), device=dev)   # (N, K, S, S)
    with eval_mode(model), torch.enable_grad():
        for m in range(steps):
            xa = (x0 + (m + 0.5) / steps * delta).detach().requires_grad_(True)
            sims = torch.einsum("nd,nkd->nk", model.encode_image(xa).float(), txt)
            for j in range(txt.shape[1]):
                (grad,) = torch.autograd.grad(sims[:, j].sum(), xa, retain_graph=j < txt.shape[1] - 1)
                total[:, j] += (grad * delta).sum(1)
    return (total / steps).detach()
