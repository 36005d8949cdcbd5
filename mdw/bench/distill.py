"""`python -m mdw bench distill`: every method of METHOD §8 (random coreset, MTT-VL-style,
LoRS-style, MDW and its ablations, the experts as upper bounds) at several M and η, on the built-in
scenes and on Flickr8k, through the real run pipeline: one parent run per (data set, η) trains the
DTCL and plain experts once; a child run per M links them and runs distill → evaluate (what a rerun
finds already done, and a finished case extended by more methods: mdw/bench/cases.py). Also the
peak memory of one matching gradient against the number of student steps (constant-memory vs
unrolled). Writes docs/benchmarks/distill.{md,json,config.json}."""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from ..config import EVAL_METHODS, ConfigError, RunConfig, ScenesConfig
from ..evaluate.methods import expand_methods, needs_plain
from ..pipeline import run_pipeline
from ..train.stage import ensure_experts
from ..runs.context import run_in_context
from ..runs.migrate import open_run
from ..runs.store import RunStore, read_json
from .cases import EXPERT_KEYS, child_config, child_run, extend_run, extendable_run, finished_run, interrupted_run, \
    measured_in, shares_experts
from .across_runs import (ACROSS_COLUMNS, ACROSS_HEADER, STRONG_BASELINES, across_runs, ratio_verdict, recorded_seed_of,
                          run_seed_of, settings_of)
from .memory import peak_memory
from .report import earlier_runs, markdown_table, read_previous, write_results

BASELINES = ("random", "mtt-vl", "lors")
COLUMNS = ["dataset", "eta", "M", "run_seed", "method", "iterations", "arch", "IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10",
           "mean_recall", "mean_recall_std", "sec_per_it", "eval_seconds"]


@dataclass
class DistillBenchConfig:
    ms: dict = field(default_factory=lambda: {"scenes": [20, 50, 100], "flickr8k": [100, 200]})
    etas: list = field(default_factory=lambda: [0.0, 0.4])
    methods: list = field(default_factory=lambda: list(EVAL_METHODS))
    iterations: int = 200
    seeds: int = 3
    student_steps: int = 300
    syn_batch: int = 50          # pairs per student step while matching (METHOD §4 minibatches b); M <= 50: all
    student_batch: int = 100     # evaluation students' minibatch; M <= 100: all
    alpha_scale: float = 1.0     # distilled sets' students at alpha_scale × the learned α (evaluate.alpha_scale)
    ceo_floor: float | None = None   # distill.ceo_floor (CEO's λ) of every distilled set; None: the config default
    syn_steps: int | None = None     # distill.syn_steps (N) of every distilled set; None: the config default
    distill: dict = field(default_factory=dict)   # any other distill.* setting of every distilled set, e.g.
    #                                               {"expert_epochs": 3}; {}: the config's (bench distill --distill)
    cross_arch: str = ""
    scenes: ScenesConfig = field(default_factory=lambda: ScenesConfig(n_train=1000, n_dev=100, n_test=300))
    epochs: dict = field(default_factory=lambda: {"scenes": 6, "flickr8k": 3})
    flickr8k_path: str = "../shared/data/flickr8k"
    memory_steps: list = field(default_factory=lambda: [4, 16])
    runs_dir: str = ""           # "": a temporary folder, removed at the end
    merge: bool = False          # keep the rows of cases (data set, η, M, run seed) this run does not measure
    out_dir: str = "docs/benchmarks"
    seed: int = 0                # the run seed: experts' initialisation and the distilled sets' draws (not the noise)
    note: str = ""               # recorded with this run's rows (e.g. which defaults changed since the others)


def parse_epochs(text: str) -> dict:
    """'scenes:6;flickr8k:8' -> {'scenes': 6, 'flickr8k': 8}. Raises ValueError naming the bad part."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, value = part.partition(":")
        if name.strip() not in ("scenes", "flickr8k") or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--epochs: {part!r} is not DATASET:E with DATASET scenes or flickr8k and E >= 1")
        out[name.strip()] = int(value)
    return out


def parent_config(cfg: DistillBenchConfig, dataset: str, eta: float) -> RunConfig:
    rc = RunConfig(name=f"bench-{dataset}-eta{eta}", seed=cfg.seed)
    rc.data.eta = eta
    if dataset == "scenes":
        rc.data.scenes = dataclasses.replace(cfg.scenes)
    else:
        rc.data.source, rc.data.path = "flickr8k", cfg.flickr8k_path
    rc.experts.epochs = cfg.epochs[dataset]
    rc.heatmaps.enabled = False
    rc.index.enabled = rc.projection.enabled = False   # the views are not what is measured here
    rc.distill.iterations, rc.distill.syn_batch = cfg.iterations, cfg.syn_batch
    if cfg.ceo_floor is not None:
        rc.distill.ceo_floor = cfg.ceo_floor
    if cfg.syn_steps is not None:
        rc.distill.syn_steps = cfg.syn_steps
    rc = with_distill(rc, cfg.distill)
    rc.evaluate = dataclasses.replace(rc.evaluate, methods=list(cfg.methods), seeds=cfg.seeds,
                                      steps=cfg.student_steps, batch_size=cfg.student_batch, cross_arch=cfg.cross_arch,
                                      alpha_scale=cfg.alpha_scale)
    return rc.validate()


BENCH_OWN = {"m": "--datasets", "iterations": "--iterations", "syn_batch": "--syn-batch", "ceo_floor": "--ceo-floor",
             "syn_steps": "--syn-steps", "experts": "--methods (each method names its experts)"}
#            distill keys the bench sets itself


def with_distill(rc: RunConfig, settings: dict) -> RunConfig:
    """`rc` with `settings` ({distill key: value}) put into its distill section, typed and checked as a
    config file's would be. Raises ConfigError naming an unknown key, a value of the wrong type, or a
    key the bench sets through its own flag (BENCH_OWN)."""
    own = sorted(set(settings) & set(BENCH_OWN))
    if own:
        raise ConfigError(f"bench distill: distill.{own[0]} is set by {BENCH_OWN[own[0]]}, not by --distill")
    d = rc.to_dict()
    d["distill"].update(settings)
    return RunConfig.from_dict(d)


def distill_settings(settings: dict) -> dict:
    """`settings` ({distill key: value}) as the table records them, so that one setting however it was
    written is one setting: typed as the config types them (1 and 1.0 are the same lr), keys sorted,
    keys at their config default left out. Raises ConfigError as `with_distill` does."""
    built, default = with_distill(RunConfig(), settings).distill, RunConfig().distill
    return {k: getattr(built, k) for k in sorted(settings) if getattr(built, k) != getattr(default, k)}


def case_of(r: dict) -> tuple:
    """A row's case: (data set, η, M, run seed); a row written before run seeds were recorded: seed 0."""
    return r["dataset"], r["eta"], r["M"], run_seed_of(r)


def rows_of(store: RunStore, run_id: str, dataset: str, eta: float, m: int, iterations: int, run_seed: int = 0) -> list:
    lay = open_run(store.run_dir(run_id))
    table = read_json(lay.eval_results)
    from ..distill.synset import DistilledSet
    from ..evaluate.methods import SAME_AS, split_method

    sec = {"mdw": float(np.mean([e["sec"] for e in store.read_events(run_id, stage="distill")] or [np.nan]))}
    its = {"mdw": iterations}
    for r in table["rows"]:
        base = split_method(r["method"])[0]
        p = lay.eval_set(SAME_AS.get(base, base))
        if base == "mdw":
            sec[r["method"]], its[r["method"]] = sec["mdw"], iterations
        elif p.is_file():
            meta = DistilledSet.load(p).meta
            its[r["method"]] = int(meta.get("iterations", iterations))       # mdw-init: 0
            sec[r["method"]] = meta.get("seconds", np.nan) / its[r["method"]] if its[r["method"]] else None
    origin = measured_in(store, run_id, [(r["method"], r.get("arch")) for r in table["rows"]])
    order = expand_methods(store.read_config(run_id)["evaluate"]["methods"])
    rank = lambda r: order.index(r["method"]) if r["method"] in order else len(order)   # noqa: E731
    out = []
    for r in sorted(table["rows"], key=rank):      # the methods' order, however many runs measured them
        row = {"dataset": dataset, "eta": eta, "M": m if not r["method"].startswith("expert") else None,
               "run_seed": run_seed, **r,
               "iterations": its.get(r["method"])}   # the distilled methods
        row["sec_per_it"] = sec.get(r["method"])
        row["eval_seconds"] = row.pop("seconds", None)
        row["measured_in"] = origin[r["method"], r.get("arch")]   # an extended case's rows: from 2+ runs
        out.append(row)
    return out


def add_rows(rows: list, new: list) -> list:
    """rows + new, where an expert row (M None: one per data set, η, run seed, method, architecture,
    shared by every M of the case) replaces the one already there instead of repeating it."""
    key = lambda r: (r["dataset"], r["eta"], run_seed_of(r), r["method"], r.get("arch"))
    again = {key(r) for r in new if r["M"] is None}
    return [r for r in rows if not (r["M"] is None and key(r) in again)] + new


def summarise(rows: list) -> list:
    """The targets of the issue, checked per (data set, η, M, run seed) on the main architecture."""
    lines = []
    cases = sorted({case_of(r) for r in rows if r["M"] is not None})
    seeds = lambda ds, eta, m: {s for d, e, mm, s in cases if (d, e, mm) == (ds, eta, m)}   # noqa: E731
    for ds, eta, m, seed in cases:
        by = {r["method"]: r for r in rows if case_of(r) == (ds, eta, m, seed) and r["arch"] == rows[0]["arch"]}
        if "mdw" not in by:
            continue
        mdw = by["mdw"]["mean_recall"]
        others = {k: v["mean_recall"] for k, v in by.items() if k != "mdw"}
        prior = [others[k] for k in ("mtt-vl", "lors") if k in others]
        beaten = [k for k, v in others.items() if v >= mdw]
        line = f"{ds} η={eta} M={m}" + (f" run seed {seed}" if len(seeds(ds, eta, m)) > 1 else "")
        line += f": MDW mean recall {mdw:.2f}"   # a comparison only with a row measured
        if prior:
            line += f"; vs best of MTT-VL/LoRS {(mdw / max(prior) - 1) * 100:+.1f}%"
        if "random" in others:
            line += f"; vs random {mdw / others['random']:.2f}×"
        base = {k: v for k, v in others.items() if k in STRONG_BASELINES}
        if base:
            top = max(base, key=base.get)
            line += f"; vs the strongest baseline ({top}, {base[top]:.2f}) {ratio_verdict(mdw / base[top])}"
        for k in ("mdw-init", "clean-coreset"):
            if k in by:
                spread = max(by["mdw"]["mean_recall_std"], by[k]["mean_recall_std"], 1e-9)
                line += f"; vs {k} {(mdw - by[k]['mean_recall']) / spread:+.1f} std (target > +2)"
        lines.append(line + f"; methods at or above MDW: {', '.join(beaten) or 'none'}")
    return lines


def recorded(cfg: DistillBenchConfig) -> dict:
    """The config as the table records it: an absolute runs or output folder by its name only, never a
    machine path."""
    label = lambda d: os.path.basename(os.path.normpath(d)) if d and os.path.isabs(d) else d   # noqa: E731
    return dict(dataclasses.asdict(cfg), runs_dir=label(cfg.runs_dir), out_dir=label(cfg.out_dir),
                distill=distill_settings(cfg.distill))


def merge_previous(cfg: DistillBenchConfig, rows: list, memory: list) -> tuple:
    """(rows, memory, configs): this run's, plus an earlier run's rows in out_dir for the cases
    (data set, η, M, run seed) and memory rows this run did not measure."""
    previous = read_previous(cfg.out_dir, "distill")
    if previous is None:
        return rows, memory, []
    old, old_cfg = previous
    cases = {case_of(r) for r in rows if r["M"] is not None}
    kept = [{**r, "run_seed": run_seed_of(r)} for r in old      # a row from before run seeds: seed 0
            if r["dataset"] != "memory" and (r["M"] is None or case_of(r) not in cases)]
    old_memory = [r for r in old if r["dataset"] == "memory"]
    earlier = earlier_runs(old_cfg, recorded(cfg))
    return add_rows(kept, rows), memory or old_memory, earlier   # expert rows measured again replace the old


def run_line(c: dict) -> str:
    """One earlier or current bench run, as the table's provenance."""
    cases = "; ".join(f"{ds} M={','.join(map(str, ms))}" for ds, ms in c["ms"].items())
    extra = ", ".join(f"{k} {c[k]}" for k in ("syn_batch", "student_batch") if k in c)
    if c.get("alpha_scale", 1.0) != 1.0:
        extra += f", distilled sets' students at {c['alpha_scale']:g} × their learned α"
    if c.get("ceo_floor") is not None:
        extra += f", CEO's λ (distill.ceo_floor) {c['ceo_floor']:g}"
    if c.get("syn_steps") is not None:
        extra += f", N = {c['syn_steps']} student steps per matching (distill.syn_steps)"
    for key, value in (c.get("distill") or {}).items():
        extra += f", distill.{key} {value}"
    if c.get("seed"):
        extra += (", " if extra else "") + f"run seed {c['seed']}"
    if c.get("epochs"):
        extra += (", " if extra else "") + "expert epochs " + ", ".join(f"{ds} {c['epochs'][ds]}" for ds in c["ms"])
    return (f"{cases}, η {', '.join(map(str, c['etas']))}: {c['iterations']} iterations, {c['seeds']} seeds"
            + (f", {extra}" if extra else "")
            + (f"; peak memory at syn_steps {', '.join(map(str, c['memory_steps']))}" if c.get("memory_steps") else "")
            + (f". {c['note']}" if c.get("note") else ""))


def mixed_cases(rows: list) -> list:
    """One line per case whose rows come from more than one run (a finished case that `bench distill`
    extended with methods: its rows read back, only the new methods measured), naming the run that
    measured each method; rows without a `measured_in` (tables written before it) are left out."""
    origins = {}
    for r in rows:
        if r.get("measured_in"):
            origins.setdefault(case_of(r), {}).setdefault(r["measured_in"], []).append(r["method"])
    return [f"{ds} η {eta:g}, M {'–' if m is None else m}, run seed {seed}: " +
            "; ".join(f"{', '.join(methods)} measured in run {run}" for run, methods in by_run.items())
            for (ds, eta, m, seed), by_run in origins.items() if len(by_run) > 1]


MIXED_HEADER = ("\n\n## Cases measured over more than one run\n\nA finished case given more methods keeps its rows and "
                "measures only the new methods; the run that measured each row (a run's name starts with its date):\n\n")


def live_runs(runs: list) -> list:
    """The runs that still own a row: a case (data set, η, M, run seed) belongs to the last run that measured it,
    the memory rows to the last run that measured memory. config.json keeps every run."""
    cases = lambda c: {(ds, eta, m, recorded_seed_of(c)) for ds, ms in c["ms"].items() for eta in c["etas"] for m in ms}
    later_cases, later_memory, live = set(), False, []
    for c in reversed(runs):
        mine = cases(c) - later_cases
        if mine or (c.get("memory_steps") and not later_memory):
            live.append(c)
        later_cases |= cases(c)
        later_memory = later_memory or bool(c.get("memory_steps"))
    return live[::-1]


def _scale_text(runs: list) -> str:
    """The header's word on evaluate.alpha_scale, from every run that owns rows (a merged table may
    hold runs at different scales: then each run's provenance line says its own)."""
    scales = {float(c.get("alpha_scale", 1.0)) for c in runs}
    if scales == {1.0}:
        return ""
    if len(scales) > 1:
        return "Distilled sets' students step at the multiple of their learned α each run below names. "
    return (f"Distilled sets' students step at {scales.pop():g} × their learned α (evaluate.alpha_scale; "
            f"coresets at evaluate.coreset_lr). ")


TOOK = ("\n\nThe last bench command took {minutes:.1f} min (a case whose runs had finished is read back from "
        "them, not measured again; each row's own times: sec_per_it, eval_seconds).\n")


def write(cfg: DistillBenchConfig, rows: list, memory: list, minutes: float) -> tuple:
    earlier = []
    if cfg.merge:
        rows, memory, earlier = merge_previous(cfg, rows, memory)
    summary, runs, mixed = summarise(rows), earlier + [recorded(cfg)], mixed_cases(rows)
    spread_rows, spread_lines = across_runs(rows, settings_of(runs, recorded(DistillBenchConfig())))
    md = ("# Distillation: every method in one run (`python -m mdw bench distill`)\n\n"
          f"Distillation iterations per distilled method: the `iterations` column; students: {cfg.student_steps} steps from "
          f"scratch, mean over {cfg.seeds} seeds (± in the JSON), last step; recall (%) on the clean test split "
          f"through FAISS. Expert rows: the experts trained on all the noisy pairs (upper bounds). "
          + _scale_text(live_runs(runs)) +
          "sec_per_it: seconds per distillation iteration.\n\n" + markdown_table(rows, COLUMNS) +
          ("\n## Peak memory of one matching gradient (M = 50, 64 px)\n\n" +
           markdown_table(memory, ["method", "syn_steps", "peak_mib", "before_mib", "device"]) if memory else "") +
          "\n## Runs merged into this table\n\n" + "\n".join(f"- {run_line(c)}" for c in live_runs(runs)) +
          (MIXED_HEADER + "\n".join(f"- {line}" for line in mixed) if mixed else "") +
          "\n\n## Targets\n\n" + "\n".join(f"- {s}" for s in summary) +
          (ACROSS_HEADER + markdown_table(spread_rows, ACROSS_COLUMNS) + "\n" + "\n".join(f"- {s}" for s in spread_lines)
           if spread_rows else "") + TOOK.format(minutes=minutes))
    config = {"runs": runs} if cfg.merge else runs[0]
    return summary, write_results(cfg.out_dir, "distill", rows + memory, config, md)


def parent_stages(ctx, rc: RunConfig, plain: bool) -> None:
    """The parent run: data, DTCL experts, and the plain experts where a method needs them."""
    run_pipeline(ctx, show_bars=False, until="experts")
    if plain:
        ensure_experts(ctx, rc, "plain", lambda f, msg="": None)


def run(cfg: DistillBenchConfig, log=print) -> tuple:
    t_all = time.time()
    parents = {(dataset, eta): parent_config(cfg, dataset, eta) for dataset in cfg.ms for eta in cfg.etas}
    for (dataset, _), rc in parents.items():   # every case's settings checked before any folder is made (ConfigError)
        for m in cfg.ms[dataset]:
            child_config(rc, m).validate()
    root = cfg.runs_dir or tempfile.mkdtemp(prefix="mdw-bench-distill-")
    store = RunStore(root)
    rows = []
    for dataset, ms in cfg.ms.items():
        for eta in cfg.etas:
            rc = parents[dataset, eta]
            plain = needs_plain(cfg.methods)
            parent = finished_run(store, rc.to_dict(), EXPERT_KEYS, ["experts"],
                                  lambda d, rc=rc: shares_experts(d, rc, plain))
            if parent:
                log(f"{dataset} η={eta}: experts reused from {parent}")
            else:
                parent = store.create(rc.to_dict(), name=rc.name)
                t0 = time.time()
                if run_in_context(store, parent, lambda ctx, rc=rc: parent_stages(ctx, rc, plain)) != 0:
                    raise RuntimeError(f"{dataset} η={eta}: {store.read_status(parent)['error']}")
                log(f"{dataset} η={eta}: experts in {time.time() - t0:.0f} s")
            current = lambda d, rc=rc: shares_experts(d, rc, plain=False)   # its data is today's   # noqa: E731
            for m in ms:
                t0 = time.time()
                child = finished_run(store, child_config(rc, m).to_dict(), need=["evaluate"], has=current)
                if child:
                    log(f"{dataset} η={eta} M={m}: reused {child}")
                else:
                    child = interrupted_run(store, child_config(rc, m).to_dict(), has=current)
                    source = "" if child else extendable_run(store, child_config(rc, m).to_dict(), has=current)
                    if child:
                        log(f"{dataset} η={eta} M={m}: resuming {child}")
                    elif source:
                        child = extend_run(store, source, child_config(rc, m))
                        log(f"{dataset} η={eta} M={m}: {child} extends the finished {source}: only the methods it lacks run")
                    else:
                        child = child_run(store, parent, rc, m)
                    if run_in_context(store, child, lambda ctx: run_pipeline(ctx, show_bars=False)) != 0:
                        raise RuntimeError(f"{dataset} η={eta} M={m}: {store.read_status(child)['error']}")
                new = rows_of(store, child, dataset, eta, m, cfg.iterations, cfg.seed)
                log(f"{dataset} η={eta} M={m}: {time.time() - t0:.0f} s; " +
                    ", ".join(f"{r['method']} {r['mean_recall']:.1f}" for r in new))
                rows = add_rows(rows, new)
                write(cfg, rows, [], (time.time() - t_all) / 60)   # a partial table survives an interruption
    memory = []
    for n in cfg.memory_steps:
        for mode in ("adjoint", "unrolled"):  # the median of 3 fresh processes (allocator noise)
            runs = sorted((peak_memory(n, mode) for _ in range(3)), key=lambda r: r["peak_mib"])
            memory.append(dict(runs[1], method=f"matching-{mode}", dataset="memory", eta=None, M=50))
    summary, paths = write(cfg, rows, memory, (time.time() - t_all) / 60)
    if not cfg.runs_dir:
        shutil.rmtree(root, ignore_errors=True)
    return rows, summary, paths
