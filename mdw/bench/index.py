"""`python -m mdw bench index`: FAISS build and query time of the exact and approximate indexes at
10k, 100k and 1M vectors, the approximate indexes' recall@10 against the exact one, and the
projection's UMAP time at 5k, 20k and 50k points. Not a timed test: it writes
docs/benchmarks/index.{md,json,config.json}.

Vectors: `structured` 256-d embeddings-like data: a mixture of Gaussians in a low-dimensional latent
space, mapped linearly to 256-d, plus isotropic noise, L2-normalised (pure random 256-d vectors have
no meaningful neighbours, so no approximate index does well on them, unlike real embeddings).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import faiss
import numpy as np

from ..evaluate import ann
from ..evaluate.projection import pca_2d, umap_2d
from ..evaluate.view_config import ProjectionConfig
from .report import markdown_table, write_results


@dataclass
class IndexBenchConfig:
    sizes: list = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    umap_sizes: list = field(default_factory=lambda: [5_000, 20_000, 50_000])
    dim: int = 256
    latent: int = 32             # latent dimension of the structured vectors
    clusters: int = 100          # Gaussian components in the latent space (unit spread)
    noise: float = 0.05          # isotropic noise added in the 256-d space
    queries: int = 300           # query vectors (same distribution, another seed)
    k: int = 10
    target_recall: float = 0.95  # nprobe / efSearch doubled until recall@10 vs exact reaches it
    ivf_nlist_max: int = 1024    # IVF cells: min(this, 4·sqrt(n)); k-means on 64·nlist samples
    hnsw_m: int = 16
    hnsw_ef_construction: int = 40
    hnsw_max_n: int = 1_000_000  # no HNSW rows above this many vectors (its build is the slow part)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    umap_warmup: int = 4500      # points of an untimed first UMAP fit (numba compiles on first use)
    threads: int = 1
    seed: int = 0
    out_dir: str = "docs/benchmarks"

    @property
    def dataset(self) -> str:
        return f"structured-{self.dim}d"


def structured(n: int, cfg: IndexBenchConfig, seed: int) -> np.ndarray:
    """(n, dim) float32 unit vectors; the mixture and the map are fixed by cfg.seed, the draw by `seed`."""
    g = np.random.default_rng(cfg.seed + 12345)
    lift = (g.normal(size=(cfg.latent, cfg.dim)) / np.sqrt(cfg.latent)).astype(np.float32)
    centres = g.normal(size=(cfg.clusters, cfg.latent)).astype(np.float32)
    r = np.random.default_rng(seed)
    out = np.empty((n, cfg.dim), dtype=np.float32)
    for i in range(0, n, 100_000):   # in blocks: bounded temporary memory at 1M
        b = min(n, i + 100_000) - i
        z = centres[r.integers(0, cfg.clusters, b)] + r.normal(size=(b, cfg.latent)).astype(np.float32)
        x = z @ lift + cfg.noise * r.normal(size=(b, cfg.dim)).astype(np.float32)
        out[i:i + b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def bench_size(n: int, cfg: IndexBenchConfig, log: Callable) -> list:
    base = {"dataset": cfg.dataset, "eta": None, "n": n, "dim": cfg.dim}
    xb, gen_s = _timed(structured, n, cfg, cfg.seed + 1)
    xq = structured(cfg.queries, cfg, cfg.seed + 2)
    log(f"n={n}: vectors made in {gen_s:.1f} s")
    exact, build_s = _timed(ann.exact_index, xb)
    (_, exact_ids), query_s = _timed(ann.search, exact, xq, cfg.k)
    rows = [{**base, "method": "exact", "params": "IndexFlatIP", "build_s": build_s,
             "query_ms": 1000 * query_s / cfg.queries, "recall@10": 1.0}]
    log(f"  exact: build {build_s:.2f} s, {rows[-1]['query_ms']:.2f} ms/query")
    del exact
    kinds = ["ivf"] + (["hnsw"] if n <= cfg.hnsw_max_n else [])
    for kind in kinds:
        nlist = min(cfg.ivf_nlist_max, ann.default_nlist(n))
        index, build_s = _timed(ann.approximate_index, xb, kind, cfg.hnsw_m, cfg.hnsw_ef_construction,
                                 nlist, cfg.seed)
        (depth, _), tune_s = _timed(ann.tune_depth, index, exact_ids, xq, cfg.k, cfg.target_recall)
        (_, ids), query_s = _timed(ann.search, index, xq, cfg.k)
        params = f"nlist={nlist}" if kind == "ivf" else f"M={cfg.hnsw_m}, efConstruction={cfg.hnsw_ef_construction}"
        rows.append({**base, "method": kind, "params": params, "depth": f"{ann.depth_name(index)}={depth}",
                     "build_s": build_s, "query_ms": 1000 * query_s / cfg.queries,
                     "recall@10": ann.overlap_recall(ids, exact_ids), "tune_s": tune_s})
        log(f"  {kind}: build {build_s:.1f} s, {rows[-1]['depth']}, {rows[-1]['query_ms']:.3f} ms/query, "
            f"recall@10 {rows[-1]['recall@10']:.3f}")
        del index
    return rows


def bench_projection(cfg: IndexBenchConfig, log: Callable) -> tuple:
    pc = cfg.projection
    warm_s = 0.0
    if cfg.umap_warmup:
        _, warm_s = _timed(lambda: umap_2d(structured(cfg.umap_warmup, cfg, cfg.seed + 9), pc))
        log(f"UMAP warm-up (numba compilation) {warm_s:.1f} s")
    rows = []
    for n in cfg.umap_sizes:
        x = structured(n, cfg, cfg.seed + 3)
        base = {"dataset": cfg.dataset, "eta": None, "n": n, "dim": cfg.dim}
        _, umap_s = _timed(lambda: umap_2d(x, pc))
        _, pca_s = _timed(lambda: pca_2d(x))
        params = f"n_neighbors={pc.n_neighbors}, min_dist={pc.min_dist}, {pc.metric}"
        rows += [{**base, "method": "umap", "params": params, "fit_s": umap_s},
                 {**base, "method": "pca", "params": "2 components (SVD)", "fit_s": pca_s}]
        log(f"UMAP n={n}: {umap_s:.1f} s (PCA {pca_s:.2f} s)")
    return rows, warm_s


def _print(msg: str) -> None:
    print(msg, flush=True)


def run(cfg: IndexBenchConfig, log: Callable[[str], None] = _print) -> tuple:
    if cfg.threads:
        import torch
        torch.set_num_threads(cfg.threads)
        faiss.omp_set_num_threads(cfg.threads)
    t0 = time.time()
    rows = []
    for n in cfg.sizes:
        rows += bench_size(n, cfg, log)
    proj_rows, warm_s = bench_projection(cfg, log) if cfg.umap_sizes else ([], 0.0)
    rows += proj_rows
    summary = {"umap_warmup_s": round(warm_s, 2), "minutes": round((time.time() - t0) / 60, 2),
               "faiss": getattr(faiss, "__version__", "")}
    config = {**dataclasses.asdict(cfg), "dataset": cfg.dataset, "summary": summary}
    paths = write_results(cfg.out_dir, "index", rows, config, render(rows, cfg, summary))
    return rows, summary, paths


def render(rows: list, cfg: IndexBenchConfig, summary: dict) -> str:
    idx = [r for r in rows if r["method"] in ("exact", "ivf", "hnsw")]
    proj = [r for r in rows if r["method"] in ("umap", "pca")]
    md = "# Retrieval index and projection timings (`python -m mdw bench index`)\n\n"
    md += (f"`{cfg.dataset}`: {cfg.dim}-d unit vectors from a mixture of {cfg.clusters} Gaussians in a "
           f"{cfg.latent}-d latent space (random linear map, {cfg.noise} isotropic noise). "
           f"{cfg.queries} queries from the same distribution, top {cfg.k}, inner product; "
           f"{cfg.threads} thread(s), FAISS {summary['faiss']}. `query_ms`: per query, in one batch. "
           f"Approximate indexes: the search depth (`nprobe`, `efSearch`) doubled until recall@10 against "
           f"the exact index reaches {cfg.target_recall}; `recall@10` is measured at that depth. The run stage "
           "uses the exact index up to 1M vectors (`index.exact_max`) and IVF above.\n\n")
    md += "## Indexes\n\n" + markdown_table(idx, ["dataset", "method", "n", "params", "depth", "build_s",
                                                   "query_ms", "recall@10"]) + notes(idx)
    if proj:
        md += ("\n## Projection (2-D map)\n\n"
               f"UMAP as the projection stage runs it (seeded, single-threaded); the first fit in a process "
               f"also compiles numba code (untimed warm-up here: {summary['umap_warmup_s']} s).\n\n")
        md += markdown_table(proj, ["dataset", "method", "n", "params", "fit_s"])
    md += f"\nWhole benchmark: {summary['minutes']} min.\n"
    return md


def notes(idx_rows: list) -> str:
    """One line on the largest size: what an approximate index buys over the exact one."""
    if not idx_rows:
        return ""
    n = max(r["n"] for r in idx_rows)
    at = {r["method"]: r for r in idx_rows if r["n"] == n}
    if "exact" not in at or len(at) < 2:
        return ""
    parts = [f"{m.upper()} answers in {r['query_ms']:.2f} ms at recall@10 {r['recall@10']:.3f} and builds in "
             f"{r['build_s']:.0f} s" for m, r in at.items() if m != "exact"]
    return (f"\nAt {n:,} vectors an exact query takes {at['exact']['query_ms']:.0f} ms; " + "; ".join(parts) +
            " (the run stage's approximate index above `index.exact_max` is `index.approx`, IVF by default).\n")
