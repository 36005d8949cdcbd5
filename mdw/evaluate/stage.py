"""The `evaluate` stage: every method of `cfg.evaluate.methods` gets M pairs, fresh students train
on them from scratch over several seeds, and their recall on the clean test split goes into one
table, eval/results.json (METHOD §8). The methods share one code path and one budget:

  random        M random training pairs as they are (noisy ones included), identity labels
  mtt-vl        distilled with plain experts, identity labels, no CEO, random init
  lors          distilled with plain experts, low-rank learned labels, WBCE loss, no CEO, random init;
                its fixed part Z₀ starts sharp (a = log(9(M−1)), LoRS's identity-like base)
  mdw           the run's own distilled set (the distill stage)
  mdw-no-dtcl   MDW with plain experts and random init
  mdw-no-p      MDW with identity labels
  mdw-no-ceo    MDW without CEO
  expert-plain, expert-dtcl   upper bounds: the experts trained on all the noisy data

Distilled baselines are kept in eval/sets/<method>.pt, students' seed-0 weights in
eval/students/<method>/seed0.pt; finished rows are not recomputed when a run resumes.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

from ..config import ModelConfig, RunConfig
from ..distill.stage import distill_from_run
from ..distill.synset import DistilledSet
from ..runs.store import atomic_write_json, read_json
from ..train.experts_io import experts_meta, load_expert
from .students import (evaluate_model, from_coreset, from_distilled, mean_std, random_coreset, save_student,
                       train_student)

DISTILLED = {
    "mtt-vl": dict(experts="plain", labels="identity", ceo=False, init="random"),
    "lors": dict(experts="plain", labels="lowrank", loss="wbce", ceo=False, init="random", z_init=0.0),
    "mdw-no-dtcl": dict(experts="plain", init="random"),
    "mdw-no-p": dict(labels="identity"),
    "mdw-no-ceo": dict(ceo=False),
}
RESULTS = os.path.join("eval", "results.json")


def needs_plain(methods) -> bool:
    return any(m == "expert-plain" or DISTILLED.get(m, {}).get("experts") == "plain" for m in methods)


def method_set(ctx, cfg: RunConfig, method: str, pairs, report: Callable):
    """The StudentData of a method (distilling a baseline when it is not on disk yet)."""
    if method == "random":
        return from_coreset(pairs, random_coreset(len(pairs), cfg.distill.m, cfg.seed))
    if method == "mdw":
        return from_distilled(DistilledSet.load(ctx.path("distill", "distilled.pt")), cfg.distill.loss)
    path = ctx.path("eval", "sets", f"{method}.pt")
    if not os.path.isfile(path):
        over = dict(DISTILLED[method])
        if cfg.evaluate.baseline_iterations:
            over["iterations"] = cfg.evaluate.baseline_iterations
        dcfg = dataclasses.replace(cfg.distill, snapshots=0, **over)
        t0 = time.time()
        syn = distill_from_run(ctx.run_dir, pairs, cfg, dcfg, cfg.seed, progress=report)
        syn.meta.update({"method": method, "seconds": time.time() - t0, **over})
        syn.save(path)
    syn = DistilledSet.load(path)
    return from_distilled(syn, syn.meta.get("loss", cfg.distill.loss))


def expert_row(ctx, cfg: RunConfig, kind: str, test) -> dict:
    """Upper bound: the experts themselves (DTCL: both tracks, as two seeds)."""
    results = [evaluate_model(load_expert(ctx.run_dir, kind, t, device=cfg.model.device), test)
               for t in experts_meta(ctx.run_dir, kind)["tracks"]]
    return {"method": f"expert-{kind}", "M": None, "arch": cfg.model.preset, "seeds": len(results),
            **mean_std(results)}


def stage_evaluate(ctx, cfg: RunConfig, report: Callable) -> None:
    from ..pipeline import ensure_experts, run_tensors

    ev = cfg.evaluate
    if needs_plain(ev.methods):
        ensure_experts(ctx, cfg, "plain", lambda f, m="": report(0.1 * f, "plain experts: " + m))
    _, pairs, test = run_tensors(ctx, cfg, lambda f, m="": report(0.1, m))
    path = ctx.path(RESULTS)
    table = read_json(path) if os.path.isfile(path) else {"rows": []}
    table["config"] = {"evaluate": dataclasses.asdict(ev), "M": cfg.distill.m, "eta": cfg.data.eta,
                       "preset": cfg.model.preset, "distill_iterations": cfg.distill.iterations}
    done = {(r["method"], r["arch"]) for r in table["rows"]}
    archs = [cfg.model.preset] + ([ev.cross_arch] if ev.cross_arch and ev.cross_arch != cfg.model.preset else [])
    jobs = [(m, a) for m in ev.methods for a in (archs[:1] if m.startswith("expert-") else archs)]
    for k, (method, arch) in enumerate(jobs):
        if (method, arch) in done:
            continue
        say = lambda f, msg="", k=k: report(0.1 + 0.9 * (k + f) / len(jobs), f"{method} ({arch}): {msg}")
        t0 = time.time()
        if method.startswith("expert-"):
            row = expert_row(ctx, cfg, method.split("-", 1)[1], test)
        else:
            data = method_set(ctx, cfg, method, pairs, lambda f, msg="": say(0.5 * f, msg))
            mcfg = ModelConfig(preset=arch, embed_dim=cfg.model.embed_dim, device=cfg.model.device)
            results = []
            for seed in range(ev.seeds):
                say(0.5 + 0.5 * seed / ev.seeds, f"student seed {seed}")
                model = train_student(data, mcfg, cfg.data.image_size, ev, seed)
                results.append(evaluate_model(model, test))
                if seed == 0 and arch == archs[0]:
                    save_student(ctx.path("eval", "students", method, "seed0.pt"), model,
                                 cfg.model.embed_dim, cfg.data.image_size)
            row = {"method": method, "M": cfg.distill.m, "arch": arch, "seeds": ev.seeds, **mean_std(results)}
        row["seconds"] = time.time() - t0
        table["rows"].append(row)
        atomic_write_json(path, table, indent=1)
        ctx.event(k, method=method, arch=arch, mean_recall=row["mean_recall"], IR1=row["IR@1"], TR1=row["TR@1"])
        ctx.log(f"evaluate: {method} ({arch}) mean recall {row['mean_recall']:.2f} ± {row['mean_recall_std']:.2f}")
