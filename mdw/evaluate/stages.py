"""The `index` and `projection` run stages (after `evaluate`): FAISS indexes of the clean test split
in index/ (mdw/evaluate/index.py) and the 2-D embedding map in projection/ (mdw/evaluate/projection.py).

Settings: `cfg.index` (IndexConfig) and `cfg.projection` (ProjectionConfig) from
mdw/evaluate/view_config.py.
"""
from __future__ import annotations

from typing import Callable

from .index import build_run_index
from .projection import project_run


def stage_index(ctx, cfg, report: Callable) -> None:
    """Embed the clean test split with the chosen model; write the indexes, embeddings and meta.json."""
    icfg = cfg.index
    if not icfg.enabled:
        ctx.log("index: disabled")
        return
    meta = build_run_index(ctx.run_dir, cfg, icfg, report)
    ctx.log(f"index: {meta['kind']} indexes of {meta['n_images']} images and {meta['n_captions']} captions "
            f"({meta['model_resolved']}), rsum {meta['recall']['rsum']:.1f}")
    approx = {f"approx_recall@10_{n}": meta[n]["recall@10_vs_exact"] for n in ("images", "captions") if n in meta}
    ctx.event(0, index_kind=meta["kind"], index_model=meta["model_resolved"], index_images=meta["n_images"],
              index_captions=meta["n_captions"], index_build_s=meta["build_seconds"],
              **{f"index_{k}": v for k, v in meta["recall"].items()}, **approx)


def stage_projection(ctx, cfg, report: Callable) -> None:
    """The 2-D map of real and distilled points (reused when its inputs did not change)."""
    pcfg = cfg.projection
    if not pcfg.enabled:
        ctx.log("projection: disabled")
        return
    meta = project_run(ctx.run_dir, cfg, pcfg, report)
    how = "reused" if meta["reused"] else f"{meta['seconds']} s"
    ctx.log(f"projection: {meta['method']} of {meta['n_points']} points ({how})")
    ctx.event(0, projection_method=meta["method"], projection_points=meta["n_points"],
              projection_distilled=meta["n_distilled"], projection_subsampled=meta["subsampled"],
              projection_reused=meta["reused"], projection_s=meta["seconds"])
