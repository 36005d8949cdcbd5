"""The stages of a run, in order. Each reads the run's config and earlier stages' outputs from the
run folder and writes its own outputs atomically; a finished stage is never redone on resume."""
from __future__ import annotations

from .config import RunConfig
from .data.prepare import pairs_record, prepare
from .progress import progress_bar
from .runs.store import atomic_write_json


def stage_data(ctx, cfg: RunConfig, report) -> None:
    """Read the source, decode and cache images, inject noise; write data/pairs.json + summary."""
    p = prepare(cfg.data, cfg.resolved_cache_dir(), report)
    summary = p.pairs.summary()
    summary["noise"] = {"eta": p.noise.eta, "seed": p.noise.seed, "count": int(len(p.noise.pairs))}
    summary["image_size"] = cfg.data.image_size
    atomic_write_json(ctx.path("data", "pairs.json"), pairs_record(p, cfg.data))
    atomic_write_json(ctx.path("data", "summary.json"), summary)
    ctx.event(0, pairs=p.pairs.n_pairs, images=p.pairs.n_images,
              noisy=int(len(p.noise.pairs)), skipped=sum(p.pairs.skipped.values()))


STAGES: list = [("data", stage_data)]


def run_pipeline(ctx, show_bars: bool | None = None) -> None:
    """Run every stage not yet done, in order (the body given to run_in_context)."""
    cfg = RunConfig.from_dict(ctx.config)
    for name, fn in STAGES:
        if ctx.stage_done(name):
            ctx.log(f"stage {name}: already done, skipped")
            continue
        with ctx.stage(name), progress_bar(name, ctx.progress, show_bars) as report:
            fn(ctx, cfg, report)


def stage_names() -> list:
    return [n for n, _ in STAGES]

