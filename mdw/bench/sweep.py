"""`python -m mdw bench sweep`: choose distillation settings on the DEV split, never the test split.

From one finished run's data and experts, each variant distills a set with its DistillConfig
overrides (or takes a random coreset, or loads a saved set), then fresh students train on it under
one or more EvalConfig overrides and are scored on the clean dev split, mean over seeds.
Variants come from a JSON object {name: {"distill": {...}, "evals": {label: {...}}, "coreset": bool |
"random" | "clean", "load": path, "curve": K}}; with "curve": K one distillation is scored at K + 1
evenly spaced iterations (0, the start, included; L_TM_end: the mean of the 10 before). Writes <out>/<name>.{md,json,config.json}; rows carry the variant's overrides.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import EvalConfig, RunConfig
from ..errors import ConfigError
from ..evaluate.methods import coreset_alpha
from .report import earlier_runs, markdown_table, read_previous, write_results

COLUMNS = ["dataset", "eta", "M", "iterations", "variant", "eval", "mean_recall", "mean_recall_std", "IR@1", "TR@1",
           "L_TM_start", "L_TM_end", "p_diag", "image_shift", "distill_seconds"]


@dataclass
class SweepConfig:
    run_dir: str = ""
    variants: dict = field(default_factory=dict)
    seeds: int = 3
    out_dir: str = "docs/benchmarks"
    name: str = "distill_sweep"
    merge: bool = False
    note: str = ""


def read_variants(text_or_path: str) -> dict:
    """Variants from a JSON file or a JSON string; a clear error names what is wrong."""
    text = open(text_or_path, encoding="utf-8").read() if os.path.isfile(text_or_path) else text_or_path
    try:
        variants = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"bench sweep --variants: not JSON ({e})") from None
    if not isinstance(variants, dict) or not variants:
        raise ConfigError("bench sweep --variants: expected a non-empty JSON object {name: {...}}")
    known_d = {f.name for f in dataclasses.fields(RunConfig().distill)}
    known_e = {f.name for f in dataclasses.fields(EvalConfig)}
    for name, v in variants.items():
        bad = set(v) - {"distill", "evals", "coreset", "load", "curve"}
        bad |= {f"distill.{k}" for k in v.get("distill", {}) if k not in known_d}
        bad |= {f"evals.{lab}.{k}" for lab, e in v.get("evals", {}).items() for k in e if k not in known_e}
        if bad:
            raise ConfigError(f"bench sweep variant {name!r}: unknown {', '.join(sorted(bad))}")
    return variants


def sweep_variant(run_dir: str, cfg: RunConfig, pairs, dev, name: str, v: dict, seeds: int) -> list:
    """The rows (one per evaluation setting) of one variant."""
    from ..distill.stage import distill_from_run
    from ..distill.synset import DistilledSet
    from ..evaluate.students import evaluate_model, from_distilled, mean_std, train_student

    dcfg = dataclasses.replace(cfg.distill, snapshots=0, **v.get("distill", {}))
    dcfg.validate()
    if v.get("curve"):
        return _curve(run_dir, cfg, pairs, dev, name, v, dataclasses.replace(dcfg, snapshots=int(v["curve"]) - 1), seeds)
    losses, t0, syn, start = [], time.time(), None, {}
    if v.get("coreset"):
        data = _coreset(run_dir, cfg, pairs, dcfg.m, v["coreset"])
    else:
        syn = DistilledSet.load(v["load"]) if v.get("load") else distill_from_run(
            run_dir, pairs, cfg, dcfg, cfg.seed, on_iteration=lambda it, m: losses.append(m["L_TM"]),
            on_snapshot=lambda it, s: start.setdefault("images", s.images.detach().clone()))
        data = from_distilled(syn, dcfg.loss)
    base = dict(dataset=cfg.data.source, eta=cfg.data.eta, M=data.m, variant=name,
                iterations=dcfg.iterations if losses else None, overrides=v.get("distill", {}),
                distill_seconds=time.time() - t0 if losses else None,
                L_TM_start=losses[0] if losses else None, L_TM_end=float(np.mean(losses[-5:])) if losses else None,
                p_diag=float((data.targets / data.targets.sum(1, keepdim=True)).diagonal().mean()) if syn else None,
                image_shift=image_shift(start["images"], syn.images) if "images" in start else None)
    rows = []
    for label, over in (v.get("evals") or {"default": {}}).items():
        ev = dataclasses.replace(cfg.evaluate, seeds=seeds, **over)
        if v.get("coreset"):   # a coreset's SGD lr is an evaluation setting (evaluate.coreset_lr)
            data.alpha = coreset_alpha(dataclasses.replace(cfg, evaluate=ev))
        res = [evaluate_model(train_student(data, cfg.model, cfg.data.image_size, ev, s), dev) for s in range(seeds)]
        rows.append({**base, "eval": label, "eval_overrides": over, **mean_std(res)})
    return rows


def image_shift(start: torch.Tensor, end: torch.Tensor) -> float:
    """How far distillation moved the synthetic images: mean |Ṽ − Ṽ₀| over every pixel value, in %
    of Ṽ₀'s range (max − min). start, end: (M, 3, S, S) float tensors of one set."""
    return float((end.detach() - start).abs().mean() / (start.max() - start.min()).clamp_min(1e-12) * 100)


def _curve(run_dir: str, cfg: RunConfig, pairs, dev, name: str, v: dict, dcfg, seeds: int) -> list:
    """One distillation of dcfg.iterations, its students scored at `curve` + 1 evenly spaced
    iterations (0 = the start, mdw-init) on the dev split: recall and L_TM against iterations."""
    import copy

    from ..distill.stage import distill_from_run
    from ..evaluate.students import evaluate_model, from_distilled, mean_std, train_student

    losses, snaps, t0 = [], {}, time.time()
    distill_from_run(run_dir, pairs, cfg, dcfg, cfg.seed, on_iteration=lambda it, m: losses.append(m["L_TM"]),
                     on_snapshot=lambda it, syn: snaps.__setitem__(it, from_distilled(copy.deepcopy(syn), dcfg.loss)))
    seconds, rows = time.time() - t0, []
    for it, data in sorted(snaps.items()):
        for label, over in (v.get("evals") or {"default": {}}).items():
            ev = dataclasses.replace(cfg.evaluate, seeds=seeds, **over)
            res = [evaluate_model(train_student(data, cfg.model, cfg.data.image_size, ev, s), dev) for s in range(seeds)]
            near = losses[max(0, it - 10):it]
            rows.append(dict(dataset=cfg.data.source, eta=cfg.data.eta, M=data.m, variant=name, iterations=it,
                             overrides=v.get("distill", {}), distill_seconds=seconds if it == dcfg.iterations else None,
                             L_TM_start=losses[0] if losses and it else None,
                             L_TM_end=float(np.mean(near)) if near else None,
                             p_diag=float((data.targets / data.targets.sum(1, keepdim=True)).diagonal().mean()),
                             eval=label, eval_overrides=over, **mean_std(res)))
    return rows


def _coreset(run_dir: str, cfg: RunConfig, pairs, m: int, kind):
    """M real pairs: `random` (or true) from every training pair, `clean` from the pool MDW starts
    from (its experts' last consensus ≥ 0.5), both drawn with the run's seed (evaluate.methods'
    random / clean-coreset)."""
    from ..distill.distill import choose_init_pairs
    from ..distill.stage import distill_experts
    from ..evaluate.students import from_coreset, random_coreset
    from ..train.experts_io import load_scores

    if kind == "clean":
        pos = choose_init_pairs(load_scores(run_dir, distill_experts(cfg))["consensus"][-1], len(pairs), m, "clean", cfg.seed)
    elif kind in (True, "random"):
        pos = random_coreset(len(pairs), m, cfg.seed)
    else:
        raise ConfigError(f"bench sweep: coreset must be true, \"random\" or \"clean\", got {kind!r}")
    return from_coreset(pairs, pos)


def run(cfg: SweepConfig, log=print) -> tuple:
    from ..inputs import run_inputs
    from ..runs.context import RunContext
    from ..runs.migrate import open_run
    from ..runs.store import RunStore

    run_dir = os.path.normpath(os.path.abspath(cfg.run_dir))
    if open_run(run_dir).main_expert_kind() is None:
        raise ConfigError(f"bench sweep --run {cfg.run_dir}: no trained experts there (experts/<kind>/meta.json)")
    ctx = RunContext(RunStore(os.path.dirname(run_dir)), os.path.basename(run_dir))
    rc = RunConfig.from_dict(ctx.config)
    inp = run_inputs(run_dir, rc, eval_split="dev")
    pairs, dev = inp.pairs, inp.eval
    rows = []
    for name, v in cfg.variants.items():
        new = sweep_variant(run_dir, rc, pairs, dev, name, v, cfg.seeds)
        log("; ".join(f"{r['variant']} / {r['eval']}: {r['mean_recall']:.2f} ± {r['mean_recall_std']:.2f}" for r in new))
        rows += new
        write(cfg, rows)   # a partial table survives an interruption
    return rows, write(cfg, rows)


def write(cfg: SweepConfig, rows: list) -> tuple:
    runs = [dict(dataclasses.asdict(cfg), run_dir=os.path.basename(os.path.normpath(cfg.run_dir)))]  # no machine path
    if cfg.merge and (previous := read_previous(cfg.out_dir, cfg.name)):
        old, old_cfg = previous
        key = lambda r: (r["dataset"], r["eta"], r["M"], r["variant"], r["eval"], r.get("iterations"))
        mine = {key(r) for r in rows}
        rows = [r for r in old if key(r) not in mine] + rows
        runs = earlier_runs(old_cfg, runs[0]) + runs
    flat = [{k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in r.items()} for r in rows]
    md = ("# Distillation settings on the dev split (`python -m mdw bench sweep`)\n\n"
          "Students from scratch on each variant's set, scored on the clean DEV split (never the test split), "
          "mean over seeds. `eval`: the student protocol (SGD with the set's learned α, or a coreset's "
          "evaluate.coreset_lr; adam: Adam at evaluate.lr). "
          "p_diag: the mean diagonal of the row-normalised P̃ at the end. image_shift: mean |Ṽ − Ṽ₀| in % of the "
          "start images' range (how far the pixels moved).\n\n"
          + markdown_table(flat, COLUMNS + ["overrides"]) + "\n## Runs\n\n"
          + "\n".join(f"- {c['run_dir']}: {c['seeds']} seeds; {', '.join(c.get('variants') or [])}. {c.get('note', '')}"
                      for c in runs) + "\n")
    return write_results(cfg.out_dir, cfg.name, flat, {"runs": runs}, md)
