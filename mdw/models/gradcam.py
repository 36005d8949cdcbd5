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

Options (defaults: standard Grad-CAM plus `align`): `align` places each cell of A where it looks
in the image (`feature_centres`: a stride-2 ResNet's cells are not at their cells' middles);
`shifts` > 1 is shift-and-stitch, a map `shifts`× finer per axis from `shifts`² shifted passes;
`positive` keeps only channels with α > 0. The heatmaps use align + shifts=4 + positive (see
mdw/heatmaps/config.py: CamOptions); CEO may keep the one-pass default for speed.

Mode: by default the model runs in eval mode for the call (`use_eval_mode=True`; its previous mode is
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
import weakref
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-8
PROBE_IMAGES = 4
_CENTRES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


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


def blur_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur (σ in pixels, reflected borders) of (..., H, W) maps."""
    if sigma <= 0:
        return maps
    r = max(1, int(round(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=maps.dtype, device=maps.device) / sigma) ** 2)
    k = k / k.sum()
    shape = maps.shape
    x = maps.reshape(-1, 1, shape[-2], shape[-1])
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect" if shape[-1] > r else "replicate"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect" if shape[-2] > r else "replicate"), k.view(1, 1, -1, 1))
    return x.view(shape)


def cam_from_grads(feats: torch.Tensor, grads: torch.Tensor, relu: bool = True,
                   positive: bool = False, weighting: str = "grad") -> torch.Tensor:
    """(N, C, h, w) map and its gradient -> (N, h, w) class activation map.

    weighting "grad" (Grad-CAM): ReLU(Σ_c α_c A_c), α_c = mean_hw(grad_c); positive=True keeps
    only the channels that raise the score (α_c ← max(α_c, 0)). "layer" (Layer-CAM, Jiang et al.
    2021): ReLU(Σ_c max(grad_c,ij, 0) A_c,ij), each cell weighted by its own positive gradient,
    which keeps an earlier, finer map's locality (`positive` is then implied).
    """
    if weighting == "layer":
        cam = (F.relu(grads) * feats).sum(1)
    else:
        alpha = grads.mean(dim=(2, 3), keepdim=True)
        if positive:
            alpha = F.relu(alpha)
        cam = (alpha * feats).sum(1)
    return F.relu(cam) if relu else cam


def spatial_map(model: nn.Module, x: torch.Tensor, layer: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """-> (normalised embedding (N, D), the map (N, C, h, w) the embedding is computed from).

    layer "": the image tower's last spatial map (`encode_image_with_features`); else the output
    of the tower's submodule of that name (e.g. "stages.1": the cpu-small tower's 8×8 map at
    64 px, "stages.0" its 16×16 map), caught by a forward hook on `model.visual`.
    """
    if not layer:
        return model.encode_image_with_features(x)
    try:
        module = model.visual.get_submodule(layer)
    except AttributeError as e:
        raise ValueError(f"gradcam: the image tower has no layer {layer!r}") from e
    caught: list = []
    handle = module.register_forward_hook(lambda m, i, out: caught.append(out))
    try:
        emb = model.encode_image(x)
    finally:
        handle.remove()
    return emb, caught[-1]


def feature_centres(model: nn.Module, size: int, layer: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(row centres (h,), column centres (w,)): where in the input image (pixel units, 0..size)
    each row / column of the map `layer` (see `spatial_map`; "" the last map) looks, measured once
    per model, input size and layer.

    A stride-2 convolution with padding 1 centres output i on input 2i, so the cells of a ResNet's
    last map sit at stride·i + 0.5 px, not at the cell centres stride·(i + ½) that plain bilinear
    upsampling assumes (7.5 px off for the cpu-small tower at 64 px). The centre of a row (column)
    is the centre of mass of the squared input gradient of a middle-column (middle-row) cell,
    summed over a few fixed random images: the effective receptive field's centre.
    """
    key = (int(size), str(next(model.parameters()).device), layer)
    cache = _CENTRES.setdefault(model, {})
    if key not in cache:
        cache[key] = _measure_centres(model, int(size), layer)
    return cache[key]


def _measure_centres(model: nn.Module, size: int, layer: str) -> tuple[np.ndarray, np.ndarray]:
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    x = (0.5 + 0.2 * torch.randn(PROBE_IMAGES, 3, size, size, generator=gen)).clamp(0, 1).to(dev)
    x.requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        feats = spatial_map(model, x, layer)[1]
        h, w = feats.shape[-2:]
        pix = np.arange(size) + 0.5

        def centre(cell: torch.Tensor, axis: int) -> float:
            (g,) = torch.autograd.grad(cell.sum(), x, retain_graph=True)
            prof = g.float().pow(2).sum(dim=(0, 1)).sum(dim=1 - axis).cpu().double().numpy()
            return float((prof * pix).sum() / prof.sum()) if prof.sum() > 0 else float("nan")

        cy = np.array([centre(feats[:, :, i, w // 2], 0) for i in range(h)])
        cx = np.array([centre(feats[:, :, h // 2, j], 1) for j in range(w)])
    return _monotone_or_uniform(cy, size), _monotone_or_uniform(cx, size)


def _monotone_or_uniform(c: np.ndarray, size: int) -> np.ndarray:
    """The measured centres when strictly increasing, else the uniform cell centres."""
    n = len(c)
    if n > 1 and np.all(np.isfinite(c)) and np.all(np.diff(c) > 0):
        return c
    return (np.arange(n) + 0.5) * size / n


def upsample_cams(cams: torch.Tensor, centres: Optional[tuple], in_size: int, out_size: int) -> torch.Tensor:
    """(N, K, h, w) -> (N, K, out_size, out_size), bilinear between the cells' centres (held
    constant beyond the outermost ones); centres None: plain bilinear (cells at their middles)."""
    n, k, h, w = cams.shape
    if centres is None:
        if (h, w) == (out_size, out_size):
            return cams
        return F.interpolate(cams, size=(out_size, out_size), mode="bilinear", align_corners=False)
    u = (np.arange(out_size) + 0.5) * in_size / out_size

    def axis(c: np.ndarray, m: int) -> torch.Tensor:
        src = np.interp(u, c, np.arange(m)) if m > 1 else np.zeros_like(u)
        return torch.from_numpy(2 * src / max(m - 1, 1) - 1).float()

    gy, gx = axis(centres[0], h), axis(centres[1], w)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).to(cams.device)   # (S, S, 2): (x, y)
    flat = cams.reshape(n * k, 1, h, w)
    out = F.grid_sample(flat, grid.expand(n * k, -1, -1, -1).to(flat.dtype), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out.view(n, k, out_size, out_size)


def _visual_needs_input_grad(model: nn.Module, images01: torch.Tensor) -> bool:
    """True when neither the pixels nor the tower's parameters require grad (then the map would
    not be in a graph): the pixels are made to require grad so that ∂s/∂A exists."""
    visual = getattr(model, "visual", model)
    return not images01.requires_grad and not any(p.requires_grad for p in visual.parameters())


@dataclass(frozen=True)
class _How:
    """How one pass turns gradients into a map (see `gradcam_with_scores`)."""
    relu: bool = True
    positive: bool = False
    create_graph: bool = False
    layer: str = ""
    weighting: str = "grad"


def _raw_cams(model: nn.Module, x: torch.Tensor, txt: torch.Tensor, how: _How) -> tuple[torch.Tensor, torch.Tensor]:
    """(cams (N, K, h, w) on the map `how.layer`, similarities (N, K)); grad mode on, model as it is."""
    if _visual_needs_input_grad(model, x):
        x = x.detach().requires_grad_(True)
    emb, feats = spatial_map(model, x, how.layer)
    sims = torch.einsum("nd,nkd->nk", emb.float(), txt)
    maps = []
    k = txt.shape[1]
    for j in range(k):
        keep = how.create_graph or j < k - 1
        (grad,) = torch.autograd.grad(sims[:, j].sum(), feats, retain_graph=keep, create_graph=how.create_graph)
        maps.append(cam_from_grads(feats if how.create_graph else feats.detach(), grad, how.relu, how.positive,
                                   how.weighting))
    return torch.stack(maps, 1).float(), sims


def shift_image(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Content moved up by dy and left by dx pixels; the vacated border repeats the edge pixels."""
    if dy == 0 and dx == 0:
        return x
    return F.pad(x[..., dy:, dx:], (0, dx, 0, dy), mode="replicate")


def _stitched_cams(model: nn.Module, x: torch.Tensor, txt: torch.Tensor, how: _How, shifts: int,
                   centres: tuple) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Shift-and-stitch (Long et al. 2015): the map of the image shifted by t/shifts of a cell
    (t = 0..shifts-1, each axis) fills the nodes between the unshifted map's; -> (cams on the
    (h·shifts, w·shifts) grid, the unshifted similarities, the grid's row and column centres)."""
    size = x.shape[-1]
    cy, cx = centres
    pitch = size / len(cy), size / len(cx)
    offs_y = [int(round(pitch[0] * t / shifts)) for t in range(shifts)]
    offs_x = [int(round(pitch[1] * t / shifts)) for t in range(shifts)]
    rows = np.concatenate([cy + d for d in offs_y])
    cols = np.concatenate([cx + d for d in offs_x])
    ry, rx = np.argsort(rows, kind="stable"), np.argsort(cols, kind="stable")
    grid_rows = []
    sims = None
    for dy in offs_y:
        blocks = []
        for dx in offs_x:
            cams, s = _raw_cams(model, shift_image(x, dy, dx), txt, how)
            sims = s if sims is None else sims
            blocks.append(cams)
        grid_rows.append(torch.cat(blocks, -1))                      # (N, K, h, w·shifts)
    full = torch.cat(grid_rows, -2)                                 # (N, K, h·shifts, w·shifts)
    full = full[..., torch.from_numpy(ry).to(full.device), :][..., torch.from_numpy(rx).to(full.device)]
    return full, sims, (rows[ry], cols[rx])


def gradcam_with_scores(model: nn.Module, images01: torch.Tensor, text_emb: torch.Tensor,
                        out_size: Optional[int] = None, create_graph: bool = False, relu: bool = True,
                        normalise: bool = True, use_eval_mode: bool = True, align: bool = True,
                        shifts: int = 1, positive: bool = False, layer: str = "",
                        weighting: str = "grad") -> tuple[torch.Tensor, torch.Tensor]:
    """-> (maps (N, K, S, S), similarities s (N, K)).

    images01: (N, 3, S, S) pixels in [0, 1]; text_emb: (N, K, D) text embeddings in the joint space
    to score against (normalised here; a zero row gives s = 0 and an all-zero map, so callers may
    pad). out_size: the maps' side (default: the images' side). relu=False keeps the signed map
    (then min-max still maps it to [0, 1]); normalise=False returns the raw (upsampled) maps.
    align=True places each cell of the map where it looks in the image (`feature_centres`);
    False: plain bilinear upsampling (cells at their middles). shifts > 1: shift-and-stitch, a
    map shifts× finer on each axis from shifts² passes (costs shifts² forward passes).
    positive=True: only channels with a positive weight count (see `cam_from_grads`). layer: the
    tower's map to draw on ("": the last; see `spatial_map`); weighting: "grad" (Grad-CAM) or
    "layer" (Layer-CAM, per-cell positive gradients; see `cam_from_grads`).
    """
    if images01.dim() != 4 or text_emb.dim() != 3 or text_emb.shape[0] != images01.shape[0]:
        raise ValueError(f"gradcam: expected images (N, 3, S, S) and text_emb (N, K, D), got "
                         f"{tuple(images01.shape)} and {tuple(text_emb.shape)}")
    if shifts < 1:
        raise ValueError(f"gradcam: shifts must be >= 1, got {shifts}")
    if weighting not in ("grad", "layer"):
        raise ValueError(f"gradcam: weighting must be grad or layer, got {weighting!r}")
    n, k = text_emb.shape[:2]
    in_size = int(images01.shape[-1])
    size = int(out_size or in_size)
    dev = next(model.parameters()).device
    x = images01.to(dev)
    txt = F.normalize(text_emb.to(dev).float(), dim=-1)
    if k == 0 or n == 0:
        return x.new_zeros((n, k, size, size)), x.new_zeros((n, k))
    how = _How(relu, positive, create_graph, layer, weighting)
    centres = feature_centres(model, in_size, layer) if align or shifts > 1 else None
    with eval_mode(model, use_eval_mode), torch.enable_grad():
        if shifts > 1:
            cams, sims, centres = _stitched_cams(model, x, txt, how, shifts, centres)
        else:
            cams, sims = _raw_cams(model, x, txt, how)
    cams = upsample_cams(cams, centres, in_size, size)
    if normalise:
        cams = normalise_maps(cams)
    if not create_graph:
        cams, sims = cams.detach(), sims.detach()
    return cams, sims


def gradcam(model: nn.Module, images01: torch.Tensor, text_emb: torch.Tensor, out_size: Optional[int] = None,
            create_graph: bool = False, relu: bool = True, use_eval_mode: bool = True,
            align: bool = True, shifts: int = 1, positive: bool = False, layer: str = "",
            weighting: str = "grad") -> torch.Tensor:
    """(N, K, S, S) Grad-CAM maps in [0, 1] of s(v_n, t_nk); see `gradcam_with_scores`."""
    return gradcam_with_scores(model, images01, text_emb, out_size, create_graph, relu,
                               use_eval_mode=use_eval_mode, align=align, shifts=shifts, positive=positive,
                               layer=layer, weighting=weighting)[0]
