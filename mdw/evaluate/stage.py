"""The `evaluate` stage: every method of `cfg.evaluate.methods` (mdw/evaluate/methods.py says
what each is) gets M pairs, fresh students train on them from scratch over several seeds under one
protocol, and their recall on the clean test split goes into one table, eval/results.json
(METHOD §8); each row names its student protocol. The upper bounds `expert-plain`, `expert-dtcl`
are the experts themselves, trained on all the noisy data.

Distilled baselines are kept in eval/sets/<method>.pt, students' seed-0 weights in
eval/students/<method>/seed0.pt; finished rows are not recomputed when a run resumes.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

from ..config import RunConfig
from ..inputs import run_inputs
from ..runs.store import atomic_write_json, read_json
from ..train.experts_io import experts_meta, load_expert
from ..train.stage import ensure_experts
from .methods import expand_methods, method_set, needs_plain, protocol_text, student_config
from .students import evaluate_model, mean_std, save_student, train_student


def expert_row(ctx, cfg: RunConfig, kind: str, test) -> dict:
    """Upper bound: the experts themselves (DTCL: both tracks, as two seeds)."""
    results = [evaluate_model(load_expert(ctx.run_dir, kind, t, device=cfg.model.device), test)
               for t in experts_meta(ctx.run_dir, kind)["tracks"]]
    return {"method": f"expert-{kind}", "M": None, "arch": cfg.model.preset, "seeds": len(results),
            **mean_std(results)}


def stage_evaluate(ctx, cfg: RunConfig, report: Callable) -> None:
    ev = cfg.evaluate
    if needs_plain(ev.methods):
        ensure_experts(ctx, cfg, "plain", lambda f, m="": report(0.1 * f, "plain experts: " + m))
    inp = run_inputs(ctx.run_dir, cfg, lambda f, m="": report(0.1, m))
    pairs, test = inp.pairs, inp.eval
    path = ctx.layout.eval_results
    table = read_json(path) if path.is_file() else {"rows": []}
    table["config"] = {"evaluate": dataclasses.asdict(ev), "M": cfg.distill.m, "eta": cfg.data.eta,
                       "preset": cfg.model.preset, "distill_iterations": cfg.distill.iterations}
    atomic_write_json(path, table, indent=1)      # the config of this run, even when every row is read back
    done = {(r["method"], r["arch"]) for r in table["rows"]}
    archs = [cfg.model.preset] + ([ev.cross_arch] if ev.cross_arch and ev.cross_arch != cfg.model.preset else [])
    jobs = [(m, a) for m in expand_methods(ev.methods) for a in (archs[:1] if m.startswith("expert-") else archs)]
    for k, (method, arch) in enumerate(jobs):
        if (method, arch) in done:
            continue
        say = lambda f, msg="", k=k: report(0.1 + 0.9 * (k + f) / len(jobs), f"{method} ({arch}): {msg}")
        t0 = time.time()
        if method.startswith("expert-"):
            row = expert_row(ctx, cfg, method.split("-", 1)[1], test)
        else:
            data = method_set(ctx, cfg, method, pairs, lambda f, msg="": say(0.5 * f, msg))
            mcfg = dataclasses.replace(cfg.model, preset=arch)   # the same text encoder g0: T̃ lives in its space
            scfg = student_config(ev, method)
            results = []
            for seed in range(ev.seeds):
                say(0.5 + 0.5 * seed / ev.seeds, f"student seed {seed}")
                model = train_student(data, mcfg, cfg.data.image_size, scfg, seed)
                results.append(evaluate_model(model, test))
                if seed == 0 and arch == archs[0]:
                    save_student(ctx.layout.eval_student(method, 0), model, mcfg, cfg.data.image_size)
            row = {"method": method, "M": cfg.distill.m, "arch": arch, "seeds": ev.seeds,
                   "protocol": protocol_text(data, scfg), **mean_std(results)}
        row["seconds"] = time.time() - t0
        table["rows"].append(row)
        atomic_write_json(path, table, indent=1)
        ctx.event(k, method=method, arch=arch, mean_recall=row["mean_recall"], IR1=row["IR@1"], TR1=row["TR@1"])
        ctx.log(f"evaluate: {method} ({arch}) mean recall {row['mean_recall']:.2f} ± {row['mean_recall_std']:.2f}")
