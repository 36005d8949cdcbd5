"""`python -m mdw bench detection`: how well DTCL finds mismatched pairs, against the single-track
small-loss split and the plain expert's similarity, and what the noise does to expert recall;
for every η on the built-in scenes and on Flickr8k, in one run (METHOD §2)."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..config import DataConfig, ExpertConfig, ModelConfig, ScenesConfig
from ..data.prepare import prepare
from ..evaluate.detection import detection_metrics
from ..models.presets import build_model
from ..train.data import build_tensors
from ..train.dtcl import train_experts
from ..train.gmm import LossGMM
from .report import markdown_table, read_previous, write_results


@dataclass
class DetectionBenchConfig:
    datasets: list = field(default_factory=lambda: ["scenes", "flickr8k"])
    etas: list = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8])
    flickr8k_path: str = "../shared/data/flickr8k"
    scenes: ScenesConfig = field(default_factory=lambda: ScenesConfig(n_train=1000, n_dev=100, n_test=300))
    experts: ExpertConfig = field(default_factory=lambda: ExpertConfig(epochs=6))
    flickr8k_epochs: int = 5
    model: ModelConfig = field(default_factory=ModelConfig)
    image_size: int = 64
    seed: int = 0
    cache_dir: str = ""
    out_dir: str = "docs/benchmarks"
    merge: bool = False          # keep other data sets' rows already in out_dir/detection.json


def _r1(metrics: dict, tracks: list) -> dict:
    ir = float(np.mean([metrics[f"IR@1_{t}"] for t in tracks]))
    tr = float(np.mean([metrics[f"TR@1_{t}"] for t in tracks]))
    mr = float(np.mean([metrics[f"mean_recall_{t}"] for t in tracks]))
    return {"IR@1": ir, "TR@1": tr, "mean_recall": mr}


def _detect(score: np.ndarray, is_noisy: np.ndarray) -> dict:
    if is_noisy.sum() == 0:
        return {"auc": None, "precision": None, "recall": None, "flagged": int((score < 0.5).sum())}
    d = detection_metrics(score, is_noisy)
    return {"auc": d["auc"], "precision": d["precision"], "recall": d["recall"], "flagged": d["flagged"]}


def bench_one(data_cfg: DataConfig, cfg: DetectionBenchConfig, epochs: int, cache: str, encoder, log) -> list:
    """Rows for one data set at one η: DTCL, the plain expert, small-loss split, similarity."""
    p = prepare(data_cfg, cache)
    pairs, test = build_tensors(p, encoder, cache)
    ecfg = dataclasses.replace(cfg.experts, epochs=epochs)
    base = {"dataset": data_cfg.source, "eta": data_cfg.eta, "train_pairs": len(pairs)}
    rows = []
    runs = {}
    for kind in ("dtcl", "plain"):
        t0 = time.time()
        res = train_experts(pairs, test, dataclasses.replace(ecfg, dtcl=kind == "dtcl"), cfg.model,
                            data_cfg.image_size, seed=cfg.seed)
        runs[kind] = (res, (time.time() - t0) / epochs)
        log(f"  {data_cfg.source} eta={data_cfg.eta} {kind}: {runs[kind][1]:.1f} s/epoch, last epoch {res.history[-1]}")
    dtcl, dtcl_s = runs["dtcl"]
    plain, plain_s = runs["plain"]
    noisy = pairs.is_noisy
    tracks_d = [t.name for t in dtcl.tracks]
    rows.append({**base, "method": "dtcl", **_detect(dtcl.scores["consensus"][-1], noisy),
                 **_r1(dtcl.history[-1], tracks_d), "sec_per_epoch": dtcl_s})
    rows.append({**base, "method": "plain", **_r1(plain.history[-1], ["A"]), "sec_per_epoch": plain_s})
    rows.append({**base, "method": "small-loss", **_detect(plain.scores["wA"][-1], noisy), "sec_per_epoch": plain_s})
    neg_sim = -plain.scores["simA"][-1]
    rows.append({**base, "method": "similarity", **_detect(LossGMM.fit(neg_sim).posterior(neg_sim), noisy)})
    return rows


def breaking_point(rows: list, dataset: str):
    """Smallest η where DTCL's AUC < 0.8 or its expert's R@1 (mean of IR@1, TR@1) is below the plain one's."""
    for eta in sorted({r["eta"] for r in rows if r["dataset"] == dataset and r["eta"] > 0}):
        d = next(r for r in rows if r["dataset"] == dataset and r["eta"] == eta and r["method"] == "dtcl")
        p = next(r for r in rows if r["dataset"] == dataset and r["eta"] == eta and r["method"] == "plain")
        if (d["auc"] is not None and d["auc"] < 0.8) or (d["IR@1"] + d["TR@1"] < p["IR@1"] + p["TR@1"]):
            return eta
    return None


def _print(msg: str) -> None:
    print(msg, flush=True)


def run(cfg: DetectionBenchConfig, log: Callable[[str], None] = _print) -> tuple:
    from ..config import RunConfig
    cache = cfg.cache_dir or RunConfig().resolved_cache_dir()
    rows, timing = [], {}
    encoder = build_model(cfg.model, cfg.image_size, seed=0).text
    for ds in cfg.datasets:
        t0 = time.time()
        if ds == "scenes":
            data_cfg = DataConfig(source="scenes", scenes=cfg.scenes, image_size=cfg.image_size)
            epochs = cfg.experts.epochs
        else:
            data_cfg = DataConfig(source=ds, path=cfg.flickr8k_path, image_size=cfg.image_size)
            epochs = cfg.flickr8k_epochs
        for eta in cfg.etas:
            rows += bench_one(dataclasses.replace(data_cfg, eta=eta, noise_seed=cfg.seed), cfg, epochs, cache, encoder, log)
        timing[ds] = time.time() - t0
        log(f"{ds}: sweep took {timing[ds] / 60:.1f} min")
    summary = {"breaking_point": {ds: breaking_point(rows, ds) for ds in cfg.datasets},
               "sweep_minutes": {ds: round(t / 60, 2) for ds, t in timing.items()}}
    config = {**dataclasses.asdict(cfg), "summary": summary}
    runs = {"+".join(cfg.datasets): config}
    if cfg.merge:
        rows, config, summary = merge_previous(cfg, rows, config, summary)
        runs = config["runs"]
    md = render(rows, runs, summary)
    paths = write_results(cfg.out_dir, "detection", rows, config, md)
    return rows, summary, paths


def merge_previous(cfg: DetectionBenchConfig, rows: list, config: dict, summary: dict) -> tuple:
    """Keep the rows of other data sets from an earlier run in the same out_dir (each data set's
    config and summary are kept beside its rows)."""
    previous = read_previous(cfg.out_dir, "detection")
    if previous is None:
        return rows, config, summary
    old_rows, old = [r for r in previous[0] if r["dataset"] not in cfg.datasets], previous[1]
    merged = {k: {**old.get("summary", {}).get(k, {}), **v} for k, v in summary.items()}
    earlier = old.get("runs") or {"+".join(old.get("datasets", [])): old}
    runs = {**earlier, "+".join(cfg.datasets): config}
    return old_rows + rows, {"runs": runs, "summary": merged}, merged


def describe(c: dict) -> str:
    """One run's data sets and expert settings (from its recorded config), for the table's header."""
    e, parts = c["experts"], []
    for ds in c["datasets"]:
        if ds == "scenes":
            sc = c["scenes"]
            parts.append(f"scenes {sc['n_train']}/{sc['n_dev']}/{sc['n_test']} images, {e['epochs']} epochs")
        else:
            parts.append(f"{ds} {c['flickr8k_epochs']} epochs")
    return (f"{'; '.join(parts)}: {e.get('optimizer', 'adam')}, lr {e['lr']}, batch {e['batch_size']}, "
            f"λ_c {e['lambda_c']}; preset `{c['model']['preset']}`, {c['image_size']} px")


def render(rows: list, runs: dict, summary: dict) -> str:
    """runs: the config of each run whose rows the table holds (one run, or several merged)."""
    cols = ["dataset", "eta", "method", "auc", "precision", "recall", "IR@1", "TR@1", "mean_recall", "sec_per_epoch"]
    md = "# Noisy-pair detection and expert recall (`python -m mdw bench detection`)\n\n"
    md += "".join(f"- {describe(c)}\n" for c in runs.values()) + "\n"
    md += ("Detection: noisy pairs are the positive class; AUC of 1 − clean score; precision/recall of the "
           "flags (clean score < 0.5). IR@1/TR@1/mean recall (%) on the clean test split, the last epoch; "
           "for DTCL the mean of its two tracks. `small-loss`: one plain track, GMM on its own loss; "
           "`similarity`: the plain expert's pair similarity (GMM split).\n\n")
    md += markdown_table(rows, cols)
    md += "\n## Summary\n\n"
    for ds in summary["breaking_point"]:
        md += (f"- {ds}: breaking point η = {summary['breaking_point'][ds]} "
               f"(first η with DTCL AUC < 0.8 or DTCL R@1 below the plain expert's; None: not reached); "
               f"sweep {summary['sweep_minutes'][ds]} min\n")
    return md
