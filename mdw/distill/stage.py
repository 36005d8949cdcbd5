"""The `distill` stage: D̃ from the run's experts, with snapshots for the evolution view, L_TM per
iteration in events.jsonl, the decoded nearest captions of every T̃ row, and word heatmaps of the
distilled pairs (against their decoded captions).

distill/distilled.pt             the final DistilledSet (Ṽ, T̃, Z/P̃, α, init pairs, label mode)
distill/snapshots/it_NNNNN.pt    the set at chosen iterations; distill/snapshots/index.json lists them
distill/decoded.json             {"k", "rows": [{"index", "init_pair", "nearest": [{"pair", "caption", "sim"}]}]}
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from ..config import DistillConfig, RunConfig
from ..inputs import run_inputs
from ..runs.layout import RunLayout
from ..runs.store import atomic_write_json
from ..train.data import PairTensors
from ..train.experts_io import experts_meta, load_buffer, load_preconditioner, load_scores
from ..train.stage import ensure_experts
from .distill import Trajectory, distill, init_distilled
from .synset import DistilledSet, decode_text


def distill_experts(cfg: RunConfig) -> str:
    """The experts MDW distills from (by the config): distill.experts, "plain" when the run trains no DTCL."""
    return cfg.distill.experts if cfg.experts.dtcl else "plain"


def trajectories(run_dir: str, kind: str) -> list:
    meta = experts_meta(run_dir, kind)
    return [Trajectory(load_buffer(run_dir, kind, t), load_preconditioner(run_dir, kind, t)) for t in meta["tracks"]]


def distill_from_run(run_dir: str, pairs: PairTensors, cfg: RunConfig, dcfg: DistillConfig, seed: int,
                     progress: Optional[Callable] = None, on_iteration: Optional[Callable] = None,
                     on_snapshot: Optional[Callable] = None) -> DistilledSet:
    """One distillation with the run's `dcfg.experts` trajectories (MDW, its ablations and the
    MTT-VL-/LoRS-style baselines all come through here, differing only in `dcfg`)."""
    kind = dcfg.experts
    ex = RunLayout(run_dir).experts(kind)
    if not ex.exists():
        raise FileNotFoundError(f"{run_dir}: no {kind} experts ({ex.meta} missing)")
    consensus = None
    if dcfg.init == "clean":
        consensus = load_scores(run_dir, kind)["consensus"][-1]
    syn = init_distilled(pairs, consensus, dcfg, dcfg.alpha_start or cfg.experts.lr, seed)
    return distill(syn, trajectories(run_dir, kind), cfg.model, cfg.data.image_size, dcfg, seed=seed,
                   progress=progress, on_iteration=on_iteration, on_snapshot=on_snapshot)


def decoded_rows(syn: DistilledSet, pairs: PairTensors, captions: list, k: int = 3) -> dict:
    """Each T̃ row's k nearest training captions (cosine in g0 space)."""
    idx, sims = decode_text(syn.text.cpu(), pairs.g0, k)
    rows = []
    for i in range(syn.m):
        nearest = [{"pair": int(pairs.pair_ids[j]), "caption": captions[int(pairs.pair_ids[j])], "sim": float(s)}
                   for j, s in zip(idx[i], sims[i])]
        rows.append({"index": i, "init_pair": int(syn.init_pairs[i]), "nearest": nearest})
    return {"k": k, "rows": rows}


def stage_distill(ctx, cfg: RunConfig, report: Callable) -> None:
    from ..heatmaps.stage import compute_and_append

    d = dataclasses.replace(cfg.distill, experts=distill_experts(cfg))
    lay = ctx.layout
    ensure_experts(ctx, cfg, d.experts, lambda f, m="": report(0.05 * f, m))
    inp = run_inputs(ctx.run_dir, cfg, lambda f, m="": report(0.05 + 0.05 * f, m))
    p, pairs = inp.data, inp.pairs
    snaps = []

    def snapshot(it: int, syn: DistilledSet) -> None:
        syn.save(lay.snapshot(it))
        snaps.append(it)
        atomic_write_json(lay.snapshot_index, {"iterations": sorted(snaps)})

    syn = distill_from_run(ctx.run_dir, pairs, cfg, d, cfg.seed,
                           progress=lambda f, m="": report(0.1 + 0.85 * f, m),
                           on_iteration=lambda it, m: ctx.event(it, **m), on_snapshot=snapshot)
    syn.meta.update({"experts": d.experts, "labels": d.labels, "ceo": d.ceo, "iterations": d.iterations,
                     "preset": cfg.model.preset, "image_size": cfg.data.image_size})
    syn.save(lay.distilled)
    decoded = decoded_rows(syn, pairs, p.pairs.captions)
    atomic_write_json(lay.decoded, decoded)
    hc = cfg.heatmaps
    if hc.enabled:
        report(0.96, "heatmaps of the distilled pairs")
        from ..train.experts_io import load_expert
        model = load_expert(ctx.run_dir, d.experts, "A", device=cfg.model.device)
        caps = [r["nearest"][0]["caption"] for r in decoded["rows"]]
        compute_and_append(ctx.run_dir, model, "distilled", list(range(syn.m)), syn.images_u8(), caps,
                           batch_size=hc.batch_size, model_info={"kind": d.experts, "track": "A"})
