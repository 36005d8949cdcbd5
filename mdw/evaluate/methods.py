"""What each `evaluate.methods` entry trains its students on, through one code path (issue 16).

Coresets (real pairs, identity labels, undistilled):
  random          M random training pairs as they are (noisy ones included)
  clean-coreset   M random pairs of the pool MDW initialises from (pairs its experts score clean),
                  drawn with MDW's seed: MDW's own starting pairs, undistilled ("what does selection
                  alone give?")
Distilled sets (all through `distill_from_run`, differing only in their DistillConfig overrides):
  mtt-vl, lors    plain experts, random init (identity labels / LoRS-style low-rank labels + WBCE)
  mdw             the run's own distilled set (the distill stage)
  mdw-no-dtcl, mdw-no-p, mdw-no-ceo   ablations
  mdw-init        MDW's exact starting set at iteration 0 (its initial P̃ and α): 0 iterations
  ladder-alpha, ladder-text, ladder-p, ladder-images   the component ladder from mdw-init: only α
                  learned, then + T̃, + P̃, + Ṽ (no CEO: the same set as mdw-no-ceo); mdw adds CEO.
                  `ladder` in evaluate.methods stands for mdw-init, the four rungs and mdw.
  filter-mtt-vl, filter-lors   the practitioner's recipe: drop the `evaluate.filter_fraction` of
                  training pairs with the highest per-pair loss under the plain expert, train plain
                  experts on the rest (experts/filtered/), distil from the rest with them.
Student protocol: one for every method (`evaluate.optimizer=alpha`, the default): SGD, per parameter
group, at a distilled set's learned α, or at `evaluate.coreset_lr` for a coreset (0.1, chosen on the
scenes dev split: docs/benchmarks/coreset_protocol.md; 0: the experts' lr, every distilled set's start α). `METHOD@adam` trains that method's students by Adam at
`evaluate.lr` instead (the other protocol, reported beside it); `evaluate.optimizer=adam` does so
for every method. `evaluate.alpha_scale` k: every distilled set's students step at k × its learned α
(matching learns α for N student steps; students take `evaluate.steps`), coresets unchanged.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import numpy as np
import torch

from ..config import EvalConfig, RunConfig
from ..distill.distill import choose_init_pairs
from ..distill.stage import distill_experts, distill_from_run
from ..distill.synset import GROUPS, DistilledSet
from ..runs.store import atomic_write_json, read_json
from ..train.data import PairTensors
from ..train.experts_io import load_scores
from .students import StudentData, from_coreset, from_distilled, random_coreset

# LoRS as published (docs/lors.md): S̃ = diag(ω) + (α/r) L Rᵀ from the identity, its wBCE; lr_z 0.01
# (0.1 broke the set on the scenes dev split: ω grew to 3.5)
_LORS = dict(labels="lors", loss="lors", ceo=False, init="random", rank=4, lors_alpha=3.0, lr_z=0.01)
DISTILLED = {
    "mtt-vl": dict(experts="plain", labels="identity", ceo=False, init="random"),
    "lors": dict(experts="plain", **_LORS),
    "mdw-no-dtcl": dict(experts="plain", init="random"),
    "mdw-no-p": dict(labels="identity"),
    "mdw-no-ceo": dict(ceo=False),
    "mdw-init": dict(iterations=0),
    "ladder-alpha": dict(lr_images=0.0, lr_text=0.0, lr_z=0.0, ceo=False),
    "ladder-text": dict(lr_images=0.0, lr_z=0.0, ceo=False),
    "ladder-p": dict(lr_images=0.0, ceo=False),
    "filter-mtt-vl": dict(experts="filtered", labels="identity", ceo=False, init="random"),
    "filter-lors": dict(experts="filtered", **_LORS),
}
SAME_AS = {"ladder-images": "mdw-no-ceo"}       # one configuration, one set on disk
CORESETS = ("random", "clean-coreset")
LADDER = ("mdw-init", "ladder-alpha", "ladder-text", "ladder-p", "ladder-images", "mdw")


def split_method(name: str) -> tuple:
    """("random@adam") -> ("random", "adam"); ("mdw") -> ("mdw", None)."""
    base, _, protocol = name.partition("@")
    return base, protocol or None


def expand_methods(methods) -> list:
    """evaluate.methods with `ladder` (and `ladder@adam`) spelled out, duplicates dropped, order kept."""
    out: list = []
    for m in methods:
        base, protocol = split_method(m)
        for b in (LADDER if base == "ladder" else (base,)):
            name = b + (f"@{protocol}" if protocol else "")
            if name not in out:
                out.append(name)
    return out


def needs_plain(methods) -> bool:
    """Whether any method needs the plain experts (the expert row, plain-expert baselines, filters)."""
    names = [split_method(m)[0] for m in expand_methods(methods)]
    return "expert-plain" in names or any(DISTILLED.get(n, {}).get("experts") in ("plain", "filtered") for n in names)


def student_config(ev: EvalConfig, method: str) -> EvalConfig:
    """The EvalConfig a method's students train under (`@adam`: Adam at evaluate.lr)."""
    protocol = split_method(method)[1]
    if protocol not in (None, "adam"):
        raise ValueError(f"evaluate.methods: unknown protocol @{protocol} in {method!r}; known: @adam")
    return dataclasses.replace(ev, optimizer="adam") if protocol == "adam" else ev


def protocol_text(data: StudentData, ev: EvalConfig) -> str:
    """The student protocol in words, for the results table."""
    if ev.optimizer == "adam" or data.alpha is None:
        return f"Adam, lr {ev.lr:g}"
    kind = "learned α" if data.learned_alpha else "lr"
    scaled = f" × {ev.alpha_scale:g}" if data.learned_alpha and ev.alpha_scale != 1 else ""
    return f"SGD, {kind} " + " / ".join(f"{a:.3g}" for a in data.alpha.tolist()) + f" ({'/'.join(GROUPS)}){scaled}"


def coreset_alpha(cfg: RunConfig) -> torch.Tensor:
    """(len(GROUPS),) float32: a coreset's per-group SGD step sizes: evaluate.coreset_lr_groups when
    set, else evaluate.coreset_lr for every group (the experts' lr when 0)."""
    if cfg.evaluate.coreset_lr_groups:
        return torch.tensor(cfg.evaluate.coreset_lr_groups, dtype=torch.float32)
    lr = cfg.evaluate.coreset_lr or cfg.experts.lr
    return torch.full((len(GROUPS),), float(lr))


def method_set(ctx, cfg: RunConfig, method: str, pairs: PairTensors, report: Callable) -> StudentData:
    """The StudentData of a method (distilling a baseline, or training filtered experts, when not
    on disk yet). Raises KeyError for an unknown method."""
    base = split_method(method)[0]
    if base == "random":
        return from_coreset(pairs, random_coreset(len(pairs), cfg.distill.m, cfg.seed), coreset_alpha(cfg))
    if base == "clean-coreset":
        consensus = _mdw_consensus(ctx, cfg)
        pos = choose_init_pairs(consensus, len(pairs), cfg.distill.m, "clean", cfg.seed)
        return from_coreset(pairs, pos, coreset_alpha(cfg))
    if base == "mdw":
        return from_distilled(DistilledSet.load(ctx.layout.distilled), cfg.distill.loss)
    base = SAME_AS.get(base, base)
    path = ctx.layout.eval_set(base)
    if not path.is_file():
        over = dict(DISTILLED[base])
        if cfg.evaluate.baseline_iterations and base != "mdw-init":
            over["iterations"] = cfg.evaluate.baseline_iterations
        dcfg = dataclasses.replace(cfg.distill, snapshots=0, **over)
        src = pairs
        if dcfg.experts == "filtered":
            keep = ensure_filtered_experts(ctx, cfg, pairs, lambda f, m="": report(0.5 * f, "filtered experts: " + m))
            src = subset(pairs, keep)
        t0 = time.time()
        syn = distill_from_run(ctx.run_dir, src, cfg, dcfg, cfg.seed, progress=report)
        syn.meta.update({"method": base, "seconds": time.time() - t0, **over})
        syn.save(path)
    syn = DistilledSet.load(path)
    return from_distilled(syn, syn.meta.get("loss", cfg.distill.loss))


def _mdw_consensus(ctx, cfg: RunConfig) -> Optional[np.ndarray]:
    if cfg.distill.init != "clean":
        return None
    return load_scores(ctx.run_dir, distill_experts(cfg))["consensus"][-1]


# ----- filter-*: the practitioner's recipe --------------------------------------------------------

def subset(pairs: PairTensors, keep: np.ndarray) -> PairTensors:
    """The training pairs at positions `keep` (images shared, not copied)."""
    idx = torch.as_tensor(np.asarray(keep), dtype=torch.long)
    return PairTensors(pairs.images, pairs.pair_image[idx], pairs.g0.subset(keep), pairs.pair_ids[keep],
                       None if pairs.is_noisy is None else pairs.is_noisy[keep])


def filter_fraction(cfg: RunConfig) -> float:
    """evaluate.filter_fraction, or the run's η when it is below 0 (20 % when η = 0)."""
    f = cfg.evaluate.filter_fraction
    return f if f >= 0 else (cfg.data.eta if cfg.data.eta > 0 else 0.2)


def filter_keep(loss: np.ndarray, fraction: float) -> np.ndarray:
    """Positions (sorted) of the pairs kept when the `fraction` with the highest loss are dropped:
    (N,) float per-pair losses -> (N − round(fraction·N),) int64."""
    n_drop = int(round(fraction * len(loss)))
    order = np.argsort(-np.asarray(loss, dtype=np.float64), kind="stable")
    return np.sort(order[n_drop:]).astype(np.int64)


def ensure_filtered_experts(ctx, cfg: RunConfig, pairs: PairTensors, report: Callable) -> np.ndarray:
    """Positions of the kept pairs; trains plain experts on them into experts/filtered/ first when
    the run has none (the plain experts' last-epoch per-pair loss, track A, ranks the pairs)."""
    from ..train.stage import expert_config
    from ..train.dtcl import train_experts
    from ..train.experts_io import save_experts

    filtered = ctx.layout.experts("filtered")
    record = filtered.filter
    if filtered.exists() and record.is_file():
        return np.asarray(read_json(record)["kept_positions"], dtype=np.int64)
    fraction = filter_fraction(cfg)
    keep = filter_keep(load_scores(ctx.run_dir, "plain")["lossA"][-1], fraction)
    ecfg = expert_config(cfg, dtcl=False)
    res = train_experts(subset(pairs, keep), None, ecfg, cfg.model, cfg.data.image_size, seed=cfg.seed,
                        progress=report)
    res.kind = "filtered"
    save_experts(res, ctx.run_dir, ecfg, cfg.model, cfg.data.image_size)
    dropped = np.setdiff1d(np.arange(len(pairs)), keep)
    info = {"criterion": "the plain expert's per-pair loss at its last epoch (track A), highest dropped",
            "fraction": fraction, "kept": int(len(keep)), "dropped": int(len(dropped)),
            "kept_positions": keep.tolist()}
    if pairs.is_noisy is not None and len(dropped):
        info["dropped_noisy_fraction"] = float(pairs.is_noisy[dropped].mean())
        info["kept_noisy_fraction"] = float(pairs.is_noisy[keep].mean())
    atomic_write_json(record, info)
    ctx.log(f"filtered experts: dropped {len(dropped)} of {len(pairs)} pairs ({fraction:.0%})")
    return keep
