"""The Evolution tab's view: what distillation did to the synthetic set, from its snapshots
(distill/snapshots: Ṽ, T̃, P̃, α at chosen iterations).

    c = evolution_curves(dv)        # EvolutionCurves: per-image change, P̃ diagonal mass / entropy, α
    f = snapshot_frame(dv, it, c)   # SnapshotFrame: the images, the change amplified ×factor + scale bar

The change is measured on the displayed images (Ṽ clipped to [0, 1]) in float, as a fraction of the
pixel range; one amplification factor (from the last snapshot) serves every snapshot, so moving the
slider shows the change grow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..runs.view_distill import DistillView, image_grid

PERCENTILE = 99.5     # the change at this percentile of the last snapshot's pixels is shown at full colour
BAR_H = 40            # px of the scale bar under the change grid


@dataclass
class EvolutionCurves:
    iterations: list          # int, ascending: the snapshots
    change: np.ndarray        # float64 (n_snapshots, M): mean |Ṽ_it − Ṽ_start| per image, fraction of the pixel range
    p_diag: np.ndarray        # float64 (n_snapshots,): mean over rows of P̃_ii / Σ_j P̃_ij (1 = identity)
    p_entropy: np.ndarray     # float64 (n_snapshots,): mean row entropy of P̃ row-normalised, / log M (0 = identity, 1 = uniform)
    alpha: np.ndarray         # float64 (n_snapshots, groups): the student step sizes α
    groups: list              # α's parameter groups (mdw.distill.synset.GROUPS)
    factor: float             # amplification of the change maps (1 when nothing changed)


@dataclass
class SnapshotFrame:
    iteration: int
    position: int             # index of the snapshot in EvolutionCurves.iterations
    images: np.ndarray        # uint8 grid of Ṽ at the iteration
    change: np.ndarray        # uint8 grid of |Δ| × factor (turbo colours) with the scale bar under it
    factor: float
    full_scale: float         # the change (fraction of the pixel range) shown at full colour = 1 / factor
    mean_change: float        # mean |Δ| over the set at this iteration

    def caption(self) -> str:
        return (f"iteration **{self.iteration}**: the images changed by {self.mean_change:.4f} of the pixel range on "
                f"average; the change map is amplified **×{self.factor:g}** (full colour = {self.full_scale:.3g})")


def _pixels(dv: DistillView, it: int) -> np.ndarray:
    """Ṽ at `it` as displayed: float32 (M, S, S, 3) in [0, 1]."""
    return dv.snapshot(it).images.detach().clamp(0, 1).permute(0, 2, 3, 1).float().numpy()


def _p_stats(p: np.ndarray) -> tuple:
    """(diagonal mass, entropy / log M) of a (M, M) target matrix; negatives (LoRS's S̃) count as 0."""
    q = np.clip(np.asarray(p, dtype=np.float64), 0, None)
    q = q / np.maximum(q.sum(1, keepdims=True), 1e-12)
    m = len(q)
    ent = -(q * np.log(np.where(q > 0, q, 1.0))).sum(1).mean() / np.log(m) if m > 1 else 0.0
    return float(np.diag(q).mean()), float(ent)


def nice_factor(full_scale: float) -> float:
    """1 / full_scale rounded down to two significant digits (≥ 1): the amplification said in words."""
    if full_scale <= 1e-9:
        return 1.0
    f = 1.0 / full_scale
    if f <= 1:
        return 1.0
    mag = 10 ** (np.floor(np.log10(f)) - 1)
    return float(np.floor(f / mag) * mag)


def evolution_curves(dv: DistillView) -> EvolutionCurves:
    """The curves over every snapshot of the run. ValueError when it has no snapshots."""
    from ..distill.synset import GROUPS
    its = dv.snapshot_iterations()
    if not its:
        raise ValueError("this run has no distillation snapshots yet")
    start = _pixels(dv, its[0])
    change, diag, ent, alpha, last = [], [], [], [], None
    for it in its:
        d = np.abs(_pixels(dv, it) - start)
        change.append(d.mean(axis=(1, 2, 3)))
        syn = dv.snapshot(it)
        pd, pe = _p_stats(syn.p().detach().numpy())
        diag.append(pd)
        ent.append(pe)
        alpha.append(syn.alpha().detach().double().numpy())
        last = d
    full = float(np.percentile(last.mean(-1), PERCENTILE))
    return EvolutionCurves(its, np.asarray(change, np.float64), np.asarray(diag), np.asarray(ent),
                           np.asarray(alpha), list(GROUPS), nice_factor(full))


def scale_bar(width: int, factor: float, height: int = BAR_H) -> np.ndarray:
    """uint8 (height, width, 3): the turbo ramp from 0 to 1 / factor, labelled with both ends and the factor."""
    from ..heatmaps.render import colourise
    img = Image.new("RGB", (width, height), (24, 24, 24))
    bar_w = max(16, width // 2)
    ramp = colourise(np.tile(np.linspace(0, 1, bar_w), (12, 1)))
    img.paste(Image.fromarray(ramp), (4, 4))
    draw = ImageDraw.Draw(img)
    draw.text((4, 18), "0", fill=(235, 235, 235))
    end = f"{1 / factor:.3g}"
    draw.text((4 + bar_w - draw.textlength(end), 18), end, fill=(235, 235, 235))
    draw.text((bar_w + 12, 4), f"|change| x{factor:g}", fill=(235, 235, 235))
    draw.text((bar_w + 12, 18), "of the pixel range", fill=(235, 235, 235))
    return np.asarray(img)


def snapshot_frame(dv: DistillView, it: int, curves: EvolutionCurves, cols: int = 10, tile: int = 80) -> SnapshotFrame:
    """The set at iteration `it` and its change from the start amplified by curves.factor.
    ValueError when there is no snapshot at `it`."""
    from ..heatmaps.render import colourise
    it = int(it)
    if it not in curves.iterations:
        raise ValueError(f"no snapshot at iteration {it}")
    d = np.abs(_pixels(dv, it) - _pixels(dv, curves.iterations[0])).mean(-1)     # (M, S, S)
    maps = np.stack([colourise(np.clip(x * curves.factor, 0, 1)) for x in d])
    cols = min(cols, len(maps))
    grid = image_grid(maps, cols, tile)
    change = np.concatenate([grid, scale_bar(grid.shape[1], curves.factor)], axis=0)
    return SnapshotFrame(it, curves.iterations.index(it), image_grid(dv.snapshot_images(it), cols, tile), change,
                         curves.factor, 1.0 / curves.factor, float(curves.change[curves.iterations.index(it)].mean()))
