"""FAISS inner-product indexes: exact (IndexFlatIP) and approximate (HNSW or IVF), the approximate
one's recall@k against the exact one, and tuning its search depth to a recall target.

Vectors are float32 and L2-normalised by the caller, so inner product = cosine similarity.
`search` returns (scores, ids); FAISS marks missing results (approximate indexes) with id -1.
"""
from __future__ import annotations

import math
from typing import Optional

import faiss
import numpy as np

from ..errors import ConfigError
from ..runs.store import atomic_save


def as_f32(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x[None, :] if x.ndim == 1 else x


def exact_index(vectors) -> faiss.Index:
    x = as_f32(vectors)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


def default_nlist(n: int) -> int:
    return int(min(65536, max(1, round(4 * math.sqrt(n)))))


def approximate_index(vectors, kind: str = "ivf", hnsw_m: int = 32, ef_construction: int = 64,
                      nlist: int = 0, seed: int = 0, train_max: int = 0) -> faiss.Index:
    """An HNSW (`hnsw`, graph degree hnsw_m) or IVF (`ivf`, nlist cells, flat codes) index holding
    `vectors`; IVF k-means trains on at most `train_max` (default 64·nlist) seeded sample rows."""
    x = as_f32(vectors)
    n, d = x.shape
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(x)
        return index
    if kind != "ivf":
        raise ConfigError(f"approximate index: unknown kind {kind!r}; known: hnsw, ivf")
    nlist = min(nlist or default_nlist(n), n)
    index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = seed
    cap = train_max or 64 * nlist
    ivf.cp.max_points_per_centroid = max(1, cap // nlist)
    train = x if n <= cap else x[np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))]
    index.train(train)
    index.add(x)
    return index


def depth_name(index: faiss.Index) -> Optional[str]:
    """The search-depth parameter of an approximate index (nprobe / efSearch); None for exact."""
    if isinstance(index, faiss.IndexHNSW):
        return "efSearch"
    try:
        faiss.extract_index_ivf(index)
        return "nprobe"
    except RuntimeError:
        return None


def set_depth(index: faiss.Index, value: int) -> None:
    name = depth_name(index)
    if name == "efSearch":
        index.hnsw.efSearch = int(value)
    elif name == "nprobe":
        faiss.extract_index_ivf(index).nprobe = int(value)


def get_depth(index: faiss.Index) -> Optional[int]:
    name = depth_name(index)
    if name == "efSearch":
        return int(index.hnsw.efSearch)
    if name == "nprobe":
        return int(faiss.extract_index_ivf(index).nprobe)
    return None


def search(index: faiss.Index, queries, k: int) -> tuple:
    """(scores (q, k'), ids (q, k')) with k' = min(k, index size)."""
    q = as_f32(queries)
    return index.search(q, max(1, min(int(k), index.ntotal)))


def overlap_recall(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """recall@k of approximate results: the mean fraction of each query's exact top k found."""
    k = exact_ids.shape[1]
    hits = [len(set(a[a >= 0].tolist()) & set(e.tolist())) for a, e in zip(approx_ids, exact_ids)]
    return float(np.sum(hits) / (k * len(exact_ids)))


def approx_recall(index: faiss.Index, exact_ids: np.ndarray, queries, k: int = 10) -> float:
    _, ids = search(index, queries, k)
    return overlap_recall(ids, exact_ids[:, :ids.shape[1]])


def tune_depth(index: faiss.Index, exact_ids: np.ndarray, queries, k: int = 10, target: float = 0.95) -> tuple:
    """Raise nprobe / efSearch (doubling) until recall@k vs the exact ids reaches `target`;
    returns (depth, recall). Exact indexes: (None, 1.0)."""
    name = depth_name(index)
    if name is None:
        return None, 1.0
    top = faiss.extract_index_ivf(index).nlist if name == "nprobe" else 4096
    depth = 1 if name == "nprobe" else max(k, 16)
    while True:
        set_depth(index, depth)
        rec = approx_recall(index, exact_ids, queries, k)
        if rec >= target or depth >= top:
            return depth, rec
        depth = min(top, depth * 2)


def write_index(path: str, index: faiss.Index) -> str:
    """faiss.write_index, atomically (temp file, then rename)."""
    return atomic_save(path, lambda tmp: faiss.write_index(index, tmp))


def read_index(path: str) -> faiss.Index:
    return faiss.read_index(path)
