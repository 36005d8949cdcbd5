"""The heatmaps bench's experts (`mdw.bench.heatmaps`): trained on the scenes train split, or
reloaded from a folder where an earlier run of the bench saved them.

    model, info = expert_for(p, cfg, experts, cache, log)   # experts: an ExpertConfig

A saved expert (track A's final model, `<kind>-<key>.pt`) is keyed by everything that makes it
(the scenes, the expert settings, the model, image size, η and seed: a hash of their JSON), so one
folder holds several and a changed setting is never served a stale model. `info` is the training
record (kind, pairs, s/epoch, test recall) measured when it was trained, plus `reused`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Callable

import torch

from ..config import ExpertConfig
from ..models.presets import build_model
from ..train.data import build_tensors
from ..train.dtcl import train_experts


def expert_key(cfg, experts: ExpertConfig) -> str:
    """12 hex digits naming the expert that `cfg` (a HeatmapBenchConfig) and `experts` train."""
    what = {"scenes": dataclasses.asdict(cfg.scenes), "experts": dataclasses.asdict(experts),
            "model": dataclasses.asdict(cfg.model), "image_size": cfg.image_size, "eta": cfg.eta, "seed": cfg.seed}
    return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def expert_for(p, cfg, experts: ExpertConfig, cache: str, log: Callable[[str], None]) -> tuple:
    """(track A's model in eval mode, training info): loaded from cfg.experts_dir when saved there
    with the same key, else trained (and saved there when cfg.experts_dir is set)."""
    path = ""
    if cfg.experts_dir:
        kind = "dtcl" if experts.dtcl else "plain"
        path = os.path.join(cfg.experts_dir, f"{kind}-{experts.optimizer}-{expert_key(cfg, experts)}.pt")
        if os.path.exists(path):
            saved = torch.load(path, map_location="cpu")
            model = build_model(cfg.model, cfg.image_size, seed=cfg.seed)
            model.load_state_dict(saved["state"])
            log(f"expert: reused {os.path.basename(path)}: {saved['info']}")
            return model.eval(), {**saved["info"], "reused": True}
    model, info = train_expert(p, cfg, experts, cache, log)
    if path:
        os.makedirs(cfg.experts_dir, exist_ok=True)
        torch.save({"state": model.state_dict(), "info": info}, path)
    return model, {**info, "reused": False}


def train_expert(p, cfg, experts: ExpertConfig, cache: str, log: Callable[[str], None]) -> tuple:
    """The expert (track A) trained on the scenes train split; (model, timing/recall info)."""
    encoder = build_model(cfg.model, cfg.image_size, seed=cfg.seed).text
    pairs, test = build_tensors(p, encoder, cache)
    t0 = time.time()
    res = train_experts(pairs, test, experts, cfg.model, cfg.image_size, seed=cfg.seed,
                        on_epoch=lambda e, m: log(f"  epoch {e}: {_short(m)}"))
    sec = (time.time() - t0) / experts.epochs
    last = res.history[-1]
    info = {"kind": res.kind, "train_pairs": len(pairs), "sec_per_epoch": round(sec, 1),
            "IR@1": last.get("IR@1_A"), "TR@1": last.get("TR@1_A"), "mean_recall": last.get("mean_recall_A")}
    log(f"expert: {info}")
    return res.tracks[0].model.eval(), info


def _short(m: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()
                     if k.startswith(("train_loss", "IR@1", "TR@1", "mean_recall")))
