"""The stages of a run, in order. Each reads the run's config and earlier stages' outputs from the
run folder (its inputs through `mdw.inputs`) and writes its own outputs atomically; a finished stage
is never redone on resume. Stages never import this module (no pipeline ↔ stage cycle)."""
from __future__ import annotations

from .config import RunConfig
from .errors import ConfigError
from .data.stage import stage_data
from .distill.stage import stage_distill
from .evaluate.stage import stage_evaluate
from .evaluate.stages import stage_index, stage_projection
from .heatmaps.stage import stage_heatmaps
from .progress import progress_bar
from .train.stage import stage_experts


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
