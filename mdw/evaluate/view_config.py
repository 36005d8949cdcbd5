"""Settings of the retrieval index (`index` stage) and the embedding map (`projection` stage).

Plain dataclasses with no heavy imports, so `mdw/config.py` can hold them as `RunConfig.index`
and `RunConfig.projection` (validated with the RunConfig; a run written before they existed gets
the defaults on open, mdw/runs/migrate.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

APPROX_KINDS = ("hnsw", "ivf")
PROJECTION_METHODS = ("auto", "umap", "pca")


@dataclass
class IndexConfig:
    """FAISS indexes of the clean test split (images and captions) for one model."""
    enabled: bool = True
    model: str = "expert"        # expert | expert:<dtcl|plain>[:<track>] | student:<method>[:<seed>]
    split: str = "test"          # the clean split to index
    exact_max: int = 1_000_000   # up to this many vectors: exact inner product (IndexFlatIP); above: approximate
    approx: str = "ivf"          # hnsw | ivf: the approximate index above exact_max
    hnsw_m: int = 32             # HNSW graph degree
    hnsw_ef_construction: int = 64
    ivf_nlist: int = 0           # IVF cells; 0: about 4·sqrt(n), at most 65536
    target_recall: float = 0.95  # the search depth (nprobe / efSearch) is raised until recall@10 vs exact reaches it
    recall_queries: int = 1000   # queries used to measure the approximate index's recall@10
    store_images: bool = True    # keep the split's images (uint8) in index/ so results can be shown
    seed: int = 0

    def validate(self) -> "IndexConfig":
        if self.approx not in APPROX_KINDS:
            raise ConfigError(f"index.approx: unknown {self.approx!r}; known: {', '.join(APPROX_KINDS)}")
        if self.exact_max < 1 or self.hnsw_m < 2 or self.recall_queries < 1:
            raise ConfigError("index: need exact_max >= 1, hnsw_m >= 2 and recall_queries >= 1")
        if not 0.0 < self.target_recall <= 1.0:
            raise ConfigError(f"index.target_recall: must be in (0, 1], got {self.target_recall}")
        if not self.model.strip():
            raise ConfigError("index.model: empty model spec (e.g. expert, expert:dtcl:A, student:mdw)")
        return self


@dataclass
class ProjectionConfig:
    """2-D map of real (training) and distilled image and text embeddings in one shared space."""
    enabled: bool = True
    model: str = "expert"        # the model whose embedding space is projected (spec as in IndexConfig)
    method: str = "auto"         # auto (UMAP, PCA below pca_below points) | umap | pca
    pca_below: int = 1000        # fewer points than this: PCA (UMAP is slow to start and noisy on tiny sets)
    max_points: int = 50_000     # above: real pairs are subsampled; flagged and distilled points always kept
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "cosine"
    seed: int = 0

    def validate(self) -> "ProjectionConfig":
        if self.method not in PROJECTION_METHODS:
            raise ConfigError(f"projection.method: unknown {self.method!r}; known: {', '.join(PROJECTION_METHODS)}")
        if self.max_points < 10 or self.n_neighbors < 2 or not 0.0 <= self.min_dist <= 1.0:
            raise ConfigError("projection: need max_points >= 10, n_neighbors >= 2, 0 <= min_dist <= 1")
        if not self.model.strip():
            raise ConfigError("projection.model: empty model spec (e.g. expert, student:mdw)")
        return self

