"""Experts and DTCL scores in the run folder (files named by RunLayout.experts / .scores):

experts/<kind>/buffer_<T>.pt   (n_epochs_kept, P) float32: trainable parameters at epoch 0..K
experts/<kind>/final_<T>.pt    {"params": (P,), "buffers": BatchNorm statistics} of the last epoch
experts/<kind>/meta.json       preset, image size, parameter names/shapes, epochs kept, lr, GMMs
dtcl/scores.npz (kind dtcl) or dtcl/scores_<kind>.npz: per epoch × pair arrays (EPOCH_ARRAYS; wA,
                               wB and flag always: a one-track expert's wB is its consensus),
                               pair_ids, is_noisy; dtcl/summary*.json: the last epoch's numbers.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..config import ExpertConfig, ModelConfig
from ..models.model import MDWModel
from ..models.presets import build_model, model_config_from, model_identity
from ..runs.layout import RunLayout
from ..runs.store import atomic_save, atomic_write_json, read_json
from .dtcl import ExpertsResult


def save_experts(res: ExpertsResult, run_dir, cfg: ExpertConfig, model_cfg: ModelConfig, image_size: int) -> None:
    """Write experts/<kind>/ (meta.json last) and the scores and summary of `res.kind`."""
    lay = RunLayout(run_dir)
    ex = lay.experts(res.kind)
    m0 = res.tracks[0].model
    for t in res.tracks:
        buf = torch.stack(t.buffer)
        atomic_save(ex.buffer(t.name), lambda tmp, buf=buf: torch.save(buf, tmp))
        if t.precond:
            pre = torch.stack(t.precond)
            atomic_save(ex.precond(t.name), lambda tmp, pre=pre: torch.save(pre, tmp))
        final = {"params": t.model.flat_params(), "buffers": t.model.flat_buffers()}
        atomic_save(ex.final(t.name), lambda tmp, f=final: torch.save(f, tmp))
    scores = dict(res.scores)
    for w in ("wA", "wB"):                       # one track: both of the app's track columns show it
        scores.setdefault(w, scores["consensus"])
    save_scores(run_dir, res.kind, scores, res.pair_ids, res.is_noisy)
    atomic_write_json(ex.meta, {
        "kind": res.kind, "tracks": [t.name for t in res.tracks], "preset": model_cfg.preset,
        "embed_dim": model_cfg.embed_dim, "model": model_identity(model_cfg), "image_size": image_size,
        "n_params": int(m0.num_trainable()),
        "params": [[n, list(p.shape)] for n, p in m0.trainable_parameters()],
        "epochs": cfg.epochs, "epochs_kept": len(res.tracks[0].buffer) - 1, "lr": cfg.lr,
        "batch_size": cfg.batch_size, "flag_threshold": cfg.flag_threshold,
        "gmm": {t.name: t.gmm.to_dict() for t in res.tracks},
        "history": res.history,
    })
    last = res.history[-1]
    summary = {"kind": res.kind, "epochs": cfg.epochs, "pairs": int(len(res.pair_ids)), **last}
    atomic_write_json(lay.expert_summary(res.kind), summary)


def save_scores(run_dir, kind: str, scores: dict, pair_ids: np.ndarray, is_noisy: Optional[np.ndarray]):
    """Write dtcl/scores*.npz atomically: scores name -> (epochs, N) arrays (EPOCH_ARRAYS), pair_ids
    int (N,), is_noisy bool (N,) or None; returns its path."""
    arrays = dict(scores)
    arrays["pair_ids"] = np.asarray(pair_ids)
    if is_noisy is not None:
        arrays["is_noisy"] = np.asarray(is_noisy).astype(np.uint8)
    path = RunLayout(run_dir).scores(kind)
    atomic_save(path, lambda tmp: np.savez_compressed(tmp, **arrays))
    return path


def experts_meta(run_dir, kind: str = "dtcl") -> dict:
    return read_json(RunLayout(run_dir).experts(kind).meta)


def load_buffer(run_dir, kind: str = "dtcl", track: str = "A") -> torch.Tensor:
    """(epochs kept + 1, P) float32."""
    return torch.load(RunLayout(run_dir).experts(kind).buffer(track), map_location="cpu")


def load_preconditioner(run_dir, kind: str = "dtcl", track: str = "A"):
    """(epochs, P): Adam's preconditioner after each kept epoch; None when the experts were trained
    without it (ExpertConfig's preconditioner off)."""
    path = RunLayout(run_dir).experts(kind).precond(track)
    return torch.load(path, map_location="cpu") if path.is_file() else None


def load_expert(run_dir: str, kind: str = "dtcl", track: str = "A", device: Optional[str] = None) -> MDWModel:
    """The track's final model (trainable parameters and BatchNorm statistics), in eval mode."""
    meta = experts_meta(run_dir, kind)
    model = build_model(model_config_from(meta, device), meta["image_size"])
    final = torch.load(RunLayout(run_dir).experts(kind).final(track), map_location="cpu")
    model.load_flat_params(final["params"])
    model.load_flat_buffers(final["buffers"])
    return model.eval()


def load_scores(run_dir, kind: str = "dtcl", keys: Optional[tuple] = None) -> dict:
    """name -> array of dtcl/scores*.npz (FileNotFoundError when the run has none); only `keys`
    (those present) when given: each array is decompressed whole, so a reader that needs 4 of 10
    arrays of a 1M-pair run reads 4."""
    with np.load(RunLayout(run_dir).scores(kind)) as z:
        return {k: z[k] for k in z.files if keys is None or k in keys}
