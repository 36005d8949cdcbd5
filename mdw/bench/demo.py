"""`python -m mdw bench demo`: how long the stakeholder demo takes here, stage by stage (issue 17).

Each repeat runs the demo config (`assets/configs/demo.json`, what `bash scripts/demo` starts) as a
fresh user would: a new process (`python -m mdw run`), an empty runs folder and an empty cache (so
image decoding, text features and the UMAP compilation are all paid). It records the wall time of
the whole process and of each stage (status.json `stage_seconds`), the DTCL AUC of the last epoch and
the recall table, then, on the last repeat's run, the app's click latency (`scripts/bench_app.py`,
a real browser). Writes demo.{json,config.json,md}; the target is ≤ 5 minutes (median of repeats).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

from ..config import DEMO_CONFIG
from ..runs.manager import repo_root
from ..runs.store import RunStore
from ..runs.view_distill import DistillView
from ..views.runs import latest_per_step
from .report import markdown_table, write_results

TARGET_S = 300.0


@dataclass
class DemoBenchConfig:
    config: str = DEMO_CONFIG      # the run config timed (relative paths: from the repository root)
    repeats: int = 3               # fresh processes, runs folders and caches
    app_repeats: int = 3           # clicks per tab for the latency table (0: skip the browser)
    out_dir: str = os.path.join("docs", "benchmarks")
    name: str = "demo"             # output file stem
    threads: int = 0               # OMP threads of the timed process (0: torch's default, as a user runs it)
    keep: str = ""                 # keep the timed runs in this folder (e.g. for scripts/screenshots.py); "": a temp folder


def _env(cache: str, threads: int = 0) -> dict:
    """The timed process's environment (the offline settings are set by `python -m mdw` and app.server)."""
    env = dict(os.environ, MDW_CACHE=cache, PYTHONPATH=repo_root())
    env.pop("OMP_NUM_THREADS", None)   # by default the demo runs as a user starts it: torch's default threads
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def time_one(config: str, root: str, threads: int = 0, log=print) -> dict:
    """One fresh demo run under `root` (runs/ and cache/ made there). Returns a row: total wall
    seconds (process start to exit), each stage's seconds, the last DTCL AUC, mean recall per method.
    Raises RuntimeError naming the run when the run does not end `done`."""
    runs, cache = os.path.join(root, "runs"), os.path.join(root, "cache")
    if os.path.isdir(runs) and os.listdir(runs):
        raise RuntimeError(f"{runs}: not empty; a timed demo starts from an empty runs folder")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "mdw", "run", "--config", config, "--runs", runs, "--no-bars"],
                          cwd=repo_root(), env=_env(cache, threads), capture_output=True, text=True)
    total = time.time() - t0
    store = RunStore(runs)
    statuses = store.list_runs()
    if proc.returncode != 0 or len(statuses) != 1 or statuses[0]["state"] != "done":
        raise RuntimeError(f"demo run failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    status = statuses[0]
    row = {"run": status["id"], "total_s": round(total, 1),
           **{f"{k}_s": v for k, v in status["stage_seconds"].items()}}
    auc = latest_per_step(store.read_events(status["id"]), "experts", "auc")
    row["dtcl_auc"] = auc.values[-1] if auc else None
    for r in DistillView(store.run_dir(status["id"])).results():
        row[f"recall_{r['method']}"] = r.get("mean_recall")
    log(f"demo: {row['total_s']} s, AUC {row['dtcl_auc']}")
    return row


def app_latency(runs: str, run_id: str, repeats: int, out: str) -> list:
    """The click latency rows of scripts/bench_app.py on one finished run (written under `out`)."""
    script = os.path.join(repo_root(), "scripts", "bench_app.py")
    proc = subprocess.run([sys.executable, script, "--runs", runs, "--run", run_id, "--repeats", str(repeats),
                           "--out", out], cwd=repo_root(), env=_env(os.path.join(os.path.dirname(runs), "cache")),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/bench_app.py failed (exit {proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}")
    with open(os.path.join(out, "app.json"), encoding="utf-8") as f:
        return json.load(f)


def summary(rows: list) -> dict:
    """Median of every numeric column over the repeats."""
    keys = [k for k in rows[0] if k != "run" and all(isinstance(r.get(k), (int, float)) for r in rows)]
    return {k: round(statistics.median(r[k] for r in rows), 3) for k in keys}


def story(med: dict) -> str:
    """What the demo's recall table says: the distilled set against the random coreset and the
    strongest selection baseline in it (clean-coreset / mdw-init), in plain words."""
    mdw, rnd = med.get("recall_mdw"), med.get("recall_random")
    sel = {k[len("recall_"):]: v for k, v in med.items() if k in ("recall_clean-coreset", "recall_mdw-init")}
    if mdw is None or rnd is None or not sel:
        return ""
    name, best = max(sel.items(), key=lambda kv: kv[1])
    what = {"clean-coreset": "M random pairs of the DTCL-trusted pool MDW starts from, left undistilled",
            "mdw-init": "MDW's own starting set, undistilled"}[name]
    verdict = ("above" if mdw > best else "below") + f" it ({mdw / best:.2f}×)"
    return (f"What a stakeholder sees in the recall table (mean recall, %): MDW's distilled set {mdw:.1f} against the "
            f"random coreset {rnd:.1f} ({mdw / rnd:.2f}×) and the strongest selection baseline, `{name}` ({what}) "
            f"{best:.1f}: distillation is {verdict} here. The students' seeds and the data are fixed, so every "
            f"repeat shows the same table.\n\n")


def markdown(cfg: DemoBenchConfig, rows: list, med: dict, latency: list, latency_error: str = "") -> str:
    stages = [k for k in med if k.endswith("_s") and k != "total_s"]
    met = "met" if med["total_s"] <= TARGET_S else "NOT met"
    return (f"# The demo run, end to end (`python -m mdw bench demo`)\n\n"
            f"`{cfg.config}` ({cfg.repeats} repeats), each a fresh `python -m mdw run` process with an empty runs "
            f"folder and an empty cache, {f'{cfg.threads} thread(s)' if cfg.threads else 'torch default threads'}, "
            f"nothing else running. Seconds per stage (status.json `stage_seconds`) and for the whole process. "
            f"Target: the median total ≤ {TARGET_S:.0f} s: **{met}** ({med['total_s']:.0f} s).\n\n"
            + markdown_table(rows + [dict(med, run="median", repeat="median")],
                             ["repeat", "total_s", *stages, "dtcl_auc", *[k for k in med if k.startswith("recall_")]])
            + "\n" + story(med)
            + ("## The app on the demo run: tab click to content drawn (`scripts/bench_app.py`)\n\n"
               + markdown_table(latency, list(latency[0].keys())) if latency else "")
            + (f"\n## The app's click latency was NOT measured\n\n```\n{latency_error}\n```\n" if latency_error else ""))


def run(cfg: DemoBenchConfig, log=print) -> tuple:
    config = cfg.config if os.path.isabs(cfg.config) else os.path.join(repo_root(), cfg.config)
    work = os.path.abspath(cfg.keep) if cfg.keep else tempfile.mkdtemp(prefix="mdw-bench-demo-")
    try:
        rows = []
        for i in range(cfg.repeats):
            rows.append(dict(time_one(config, os.path.join(work, f"r{i}"), cfg.threads, log), repeat=i))
        med = summary(rows)
        latency, latency_error = [], ""
        if cfg.app_repeats:
            last = os.path.join(work, f"r{cfg.repeats - 1}")
            try:
                latency = app_latency(os.path.join(last, "runs"), rows[-1]["run"], cfg.app_repeats,
                                      os.path.join(work, "app"))
            except RuntimeError as e:   # the timings stand; the table says the browser part failed
                latency_error = str(e)
                log(f"demo: {e}")
    finally:
        if not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)
    md = markdown(cfg, rows, med, latency, latency_error)
    return med, write_results(cfg.out_dir, cfg.name, rows + [dict(r, table="app") for r in latency],
                              {**asdict(cfg), "target_s": TARGET_S}, md)
