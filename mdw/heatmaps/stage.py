"""The `heatmaps` run stage: per-word maps of the pairs people look at first.

After the experts: the `n_most` most and `n_least` least trusted training pairs by the last
epoch's DTCL consensus score (the plain expert's clean probability when the run trained a plain
expert), with one track's final expert (METHOD §7). Written to heatmaps/maps.npz + index.json
(see store.py). The distillation stage adds its pairs with `compute_and_append`.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import RunError
from ..inputs import run_data
from ..train.experts_io import load_expert, load_scores
from .compute import CamOptions, word_maps
from .store import append_items, pack


def select_trusted(consensus: np.ndarray, n_most: int, n_least: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the n_most highest scores, best first; of the n_least lowest, worst first),
    disjoint (the least-trusted list never repeats a most-trusted pair). Ties keep index order."""
    order = np.argsort(-np.asarray(consensus, dtype=np.float64), kind="stable")
    most = order[:n_most]
    rest = order[len(most):]
    least = rest[::-1][:n_least] if n_least else rest[:0]
    return most, least


def compute_and_append(run_dir: str, model, group: str, item_ids: Sequence[int], images_u8: np.ndarray,
                       captions: Sequence[str], image_of: Optional[Sequence[int]] = None,
                       clean_scores: Optional[Sequence[float]] = None, is_noisy: Optional[Sequence[int]] = None,
                       batch_size: int = 64, model_info: Optional[dict] = None,
                       cam: CamOptions = CamOptions()) -> dict:
    """Compute word maps of (images_u8[image_of[c]], captions[c]) and store them under `group`.

    For distilled pairs: images_u8 = Ṽ as uint8 (M, S, S, 3), captions = the decoded nearest
    captions, image_of = the distilled image of each caption, item_ids = the distilled index of
    each caption. Rows already stored under `group` are replaced. Returns the stored arrays.
    """
    images_u8 = np.asarray(images_u8, dtype=np.uint8)
    idx = np.arange(len(captions)) if image_of is None else np.asarray(image_of, dtype=np.int64)
    wms = word_maps(model, images_u8, list(captions), idx, batch_size=batch_size, cam=cam)
    packed = pack(group, list(item_ids), images_u8[idx], wms, clean_scores, is_noisy)
    return append_items(run_dir, packed, model_info)


def stage_heatmaps(ctx, cfg, report: Callable) -> None:
    """Maps of the most and least trusted training pairs by the final consensus score."""
    hc = cfg.heatmaps
    if not hc.enabled or hc.n_most + hc.n_least == 0:
        ctx.log("heatmaps: disabled")
        return
    run_dir = ctx.run_dir
    kind = ctx.layout.main_expert_kind(cfg.experts.dtcl)
    if kind is None:
        raise RunError(f"{run_dir}: heatmaps need the run's experts (no experts/dtcl or experts/plain yet)")
    scores = load_scores(run_dir, kind)
    consensus = np.asarray(scores["consensus"][-1], dtype=np.float32)
    pair_ids = np.asarray(scores["pair_ids"], dtype=np.int64)
    is_noisy = scores.get("is_noisy")
    most, least = select_trusted(consensus, hc.n_most, hc.n_least)
    report(0.05, "reading the data")
    p = run_data(ctx.run_dir)
    model = load_expert(run_dir, kind, hc.track, device=cfg.model.device)
    cam = CamOptions(shifts=hc.shifts)
    info = {"kind": kind, "track": hc.track, "preset": model.preset, "image_size": model.image_size,
            "cam": cam.to_dict()}
    for k, (group, pick) in enumerate((("most_trusted", most), ("least_trusted", least))):
        report(0.1 + 0.45 * k, f"heatmaps: {group.replace('_', ' ')} pairs")
        ids = pair_ids[pick]
        images = p.images[p.pairs.pair_image[ids]]
        noisy = is_noisy[pick].astype(np.int8) if is_noisy is not None else None
        compute_and_append(run_dir, model, group, ids, images, [p.pairs.captions[i] for i in ids],
                           clean_scores=consensus[pick], is_noisy=noisy, batch_size=hc.batch_size,
                           model_info=info, cam=cam)
    ctx.event(0, heatmap_pairs=int(len(most) + len(least)), expert=kind, track=hc.track)
    report(1.0, "heatmaps: done")
