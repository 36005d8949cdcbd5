"""The experts stage: train DTCL (two tracks) or plain experts on the run's training pairs and write
experts/<kind>/, dtcl/scores* and one event per epoch. Other stages call `ensure_experts` when a
method needs a family the run has not trained yet (baselines need plain experts)."""
from __future__ import annotations

import dataclasses

from ..config import RunConfig
from ..inputs import run_inputs
from .dtcl import train_experts
from .experts_io import save_experts
from .score import save_reference


def expert_config(cfg: RunConfig, dtcl: bool):
    """The run's ExpertConfig for DTCL or plain experts, keeping the epochs distillation can use."""
    d = cfg.distill
    experts_cfg = dataclasses.replace(cfg.experts, dtcl=dtcl)
    if not experts_cfg.buffer_epochs:
        experts_cfg.buffer_epochs = min(cfg.experts.epochs, d.max_start_epoch + d.expert_epochs)
    return experts_cfg


def kind_of(dtcl: bool) -> str:
    return "dtcl" if dtcl else "plain"


def train_and_save_experts(ctx, cfg: RunConfig, dtcl: bool, report) -> None:
    """Train DTCL (two tracks) or plain experts; write experts/<kind>/, dtcl/scores*, events."""
    inp = run_inputs(ctx.run_dir, cfg, lambda f, m="": report(0.1 * f, m))
    experts_cfg = expert_config(cfg, dtcl)
    res = train_experts(inp.pairs, inp.eval, experts_cfg, cfg.model, cfg.data.image_size, seed=cfg.seed,
                        progress=lambda f, m="": report(0.1 + 0.9 * f, m),
                        on_epoch=lambda epoch, metrics: _epoch_event(ctx, dtcl, epoch, metrics))
    save_experts(res, ctx.run_dir, experts_cfg, cfg.model, cfg.data.image_size)
    save_reference(inp.pairs, res.scores["consensus"][-1], ctx.run_dir, res.kind, cfg.experts.batch_size - 1, cfg.seed)


def _epoch_event(ctx, dtcl: bool, epoch: int, metrics: dict) -> None:
    ctx.event(epoch, kind=kind_of(dtcl), **metrics)
    if metrics.get("warning"):
        ctx.log(f"warning: {kind_of(dtcl)} experts, epoch {epoch}: {metrics['warning']}")


def ensure_experts(ctx, cfg: RunConfig, kind: str, report) -> None:
    """Train the `kind` experts if the run does not have them yet (baselines need plain ones)."""
    if not ctx.layout.experts(kind).exists():
        ctx.log(f"training {kind} experts (needed here, not yet in the run)")
        train_and_save_experts(ctx, cfg, kind == "dtcl", report)


def stage_experts(ctx, cfg: RunConfig, report) -> None:
    """Train the experts (DTCL or plain); write experts/, dtcl/scores and per-epoch events."""
    train_and_save_experts(ctx, cfg, cfg.experts.dtcl, report)
