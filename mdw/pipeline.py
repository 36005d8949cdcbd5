"""The stages of a run, in order. Each reads the run's config and earlier stages' outputs from the
run folder and writes its own outputs atomically; a finished stage is never redone on resume."""
from __future__ import annotations

import dataclasses
import os

from .config import RunConfig
from .errors import ConfigError
from .data.prepare import Prepared, load_prepared, pairs_record, prepare
from .distill.stage import stage_distill
from .evaluate.stage import stage_evaluate
from .evaluate.stages import stage_index, stage_projection
from .heatmaps.stage import stage_heatmaps
from .models.presets import build_model
from .models.text_context import context_summary, describe_cut
from .progress import progress_bar
from .runs.store import atomic_write_json, read_json
from .train.data import build_tensors
from .train.dtcl import train_experts
from .train.experts_io import save_experts
from .train.score import save_reference


def stage_data(ctx, cfg: RunConfig, report) -> None:
    """Read the source, decode and cache images, inject noise; write data/pairs.json + summary."""
    p = prepare(cfg.data, cfg.resolved_cache_dir(), report)
    summary = p.pairs.summary()
    summary["noise"] = {"eta": p.noise.eta, "seed": p.noise.seed, "count": int(len(p.noise.pairs))}
    summary["image_size"] = cfg.data.image_size
    summary["text_context"] = text = context_summary(p.pairs.captions, cfg.model)
    if text.get("truncated_captions"):
        ctx.log("warning: " + describe_cut(text["truncated_captions"], text["captions"], text["context_tokens"]))
    atomic_write_json(ctx.path("data", "pairs.json"), pairs_record(p, cfg.data))
    atomic_write_json(ctx.path("data", "summary.json"), summary)
    ctx.event(0, pairs=p.pairs.n_pairs, images=p.pairs.n_images,
              noisy=int(len(p.noise.pairs)), skipped=sum(p.pairs.skipped.values()))


def run_data(ctx, cfg: RunConfig, report=None) -> Prepared:
    """The run's data as its data stage recorded it (images from the cache, noise as recorded)."""
    record = read_json(ctx.path("data", "pairs.json"))
    return load_prepared(record, cfg.data, cfg.resolved_cache_dir(), report)


def run_tensors(ctx, cfg: RunConfig, report=None, eval_split: str = "test") -> tuple:
    """(Prepared, training PairTensors, clean `eval_split` RetrievalSplit) of the run (cached features)."""
    report = report or (lambda f, m="": None)
    p = run_data(ctx, cfg, lambda f, m="": report(0.3 * f, m))
    encoder = build_model(cfg.model, cfg.data.image_size, seed=cfg.seed).text
    pairs, test = build_tensors(p, encoder, cfg.resolved_cache_dir(), eval_split=eval_split,
                                progress=lambda f: report(0.3 + 0.7 * f, "text features"))
    return p, pairs, test


def expert_config(cfg: RunConfig, dtcl: bool):
    """The run's ExpertConfig for DTCL or plain experts, keeping the epochs distillation can use."""
    d = cfg.distill
    experts_cfg = dataclasses.replace(cfg.experts, dtcl=dtcl)
    if not experts_cfg.buffer_epochs:
        experts_cfg.buffer_epochs = min(cfg.experts.epochs, d.max_start_epoch + d.expert_epochs)
    return experts_cfg


def train_and_save_experts(ctx, cfg: RunConfig, dtcl: bool, report) -> None:
    """Train DTCL (two tracks) or plain experts; write experts/<kind>/, dtcl/scores*, events."""
    _, pairs, test = run_tensors(ctx, cfg, lambda f, m="": report(0.1 * f, m))
    experts_cfg = expert_config(cfg, dtcl)
    res = train_experts(pairs, test, experts_cfg, cfg.model, cfg.data.image_size, seed=cfg.seed,
                        progress=lambda f, m="": report(0.1 + 0.9 * f, m),
                        on_epoch=lambda epoch, metrics: _epoch_event(ctx, dtcl, epoch, metrics))
    save_experts(res, ctx.run_dir, experts_cfg, cfg.model, cfg.data.image_size)
    save_reference(pairs, res.scores["consensus"][-1], ctx.run_dir, res.kind, cfg.experts.batch_size - 1, cfg.seed)


def _epoch_event(ctx, dtcl: bool, epoch: int, metrics: dict) -> None:
    ctx.event(epoch, kind=res_kind(dtcl), **metrics)
    if metrics.get("warning"):
        ctx.log(f"warning: {res_kind(dtcl)} experts, epoch {epoch}: {metrics['warning']}")


def res_kind(dtcl: bool) -> str:
    return "dtcl" if dtcl else "plain"


def ensure_experts(ctx, cfg: RunConfig, kind: str, report) -> None:
    """Train the `kind` experts if the run does not have them yet (baselines need plain ones)."""
    if not os.path.isfile(ctx.path("experts", kind, "meta.json")):
        ctx.log(f"training {kind} experts (needed here, not yet in the run)")
        train_and_save_experts(ctx, cfg, kind == "dtcl", report)


def stage_experts(ctx, cfg: RunConfig, report) -> None:
    """Train the experts (DTCL or plain); write experts/, dtcl/scores and per-epoch events."""
    train_and_save_experts(ctx, cfg, cfg.experts.dtcl, report)


STAGES: list = [("data", stage_data), ("experts", stage_experts), ("heatmaps", stage_heatmaps),
                ("distill", stage_distill), ("evaluate", stage_evaluate), ("index", stage_index),
                ("projection", stage_projection)]


def run_pipeline(ctx, show_bars: bool | None = None, until: str | None = None) -> None:
    """Run every stage not yet done, in order, up to and including `until` (the body given to
    run_in_context)."""
    cfg = RunConfig.from_dict(ctx.config)
    names = stage_names()
    if until is not None and until not in names:
        raise ConfigError(f"--until: unknown stage {until!r}; stages: {', '.join(names)}")
    for name, fn in STAGES[:names.index(until) + 1 if until else len(STAGES)]:
        if ctx.stage_done(name):
            ctx.log(f"stage {name}: already done, skipped")
            continue
        with ctx.stage(name), progress_bar(name, ctx.progress, show_bars) as report:
            fn(ctx, cfg, report)


def stage_names() -> list:
    return [n for n, _ in STAGES]
