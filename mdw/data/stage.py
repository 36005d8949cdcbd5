"""The data stage: read the source, decode the images, inject noise, and write the run's own data
(data/images.npy, data/table/, data/pairs.json, data/summary.json; see run_data.py). Every later
stage and the app read those, never the source again."""
from __future__ import annotations

from ..config import RunConfig
from ..models.text_context import context_summary, describe_cut
from ..runs.store import atomic_write_json
from .prepare import prepare
from .run_data import write_run_data


def stage_data(ctx, cfg: RunConfig, report) -> None:
    """Source → decoded images → noise → the run's data files; summary.json for the app."""
    p = prepare(cfg.data, cfg.resolved_cache_dir(), lambda f, m="": report(0.9 * f, m))
    summary = p.pairs.summary()
    summary["noise"] = {"eta": p.noise.eta, "seed": p.noise.seed, "count": int(len(p.noise.pairs))}
    summary["image_size"] = cfg.data.image_size
    summary["text_context"] = text = context_summary(p.pairs.captions, cfg.model)
    if text.get("truncated_captions"):
        ctx.log("warning: " + describe_cut(text["truncated_captions"], text["captions"], text["context_tokens"]))
    report(0.9, "writing the run's data")
    lay = ctx.layout
    write_run_data(lay, p, cfg.data)
    atomic_write_json(lay.data_summary, summary)
    ctx.event(0, pairs=p.pairs.n_pairs, images=p.pairs.n_images,
              noisy=int(len(p.noise.pairs)), skipped=sum(p.pairs.skipped.values()))
