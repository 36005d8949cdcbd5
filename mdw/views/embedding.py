"""The Embedding map tab's view: the run's projection as named points, drawn as layers in a
colour-blind-safe palette (Okabe-Ito) with the distilled points last, larger and labelled with their
index; images and texts as two maps in the one shared 2-D space; a point's sample.

    pts = load_points(run_dir)                    # Points, None before the projection stage
    m = embedding_map(pts, "image", statuses=STATUS_NAMES, sources=SOURCES)   # MapView: layers in draw order
    i = first_distilled_point(pts)                # the point the sample panel opens on
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..evaluate.projection import KIND, SOURCE, STATUS, load_projection, points_path

# status code (projection.STATUS) -> the name the app shows; the order is the draw order
STATUS_NAMES = {STATUS["clean"]: "clean", STATUS["flagged"]: "flagged", STATUS["noisy"]: "noisy (missed)",
                STATUS["flagged_noisy"]: "noisy (flagged)", STATUS["distilled"]: "distilled"}
SOURCES = tuple(SOURCE)
KINDS = tuple(KIND)
# Okabe & Ito (2008), distinguishable under the common colour-vision deficiencies
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7"}
PALETTE = {"clean": OKABE_ITO["sky blue"], "flagged": OKABE_ITO["orange"], "noisy (missed)": OKABE_ITO["reddish purple"],
           "noisy (flagged)": OKABE_ITO["vermillion"], "distilled": OKABE_ITO["black"]}
DENSE = 2000          # real points of one kind above which they are drawn small and transparent
DRAW_REAL = 20_000    # real points of one map sent to the browser at most (a seeded uniform sample above)
TABLE_ROWS = 500


@dataclass
class Points:
    """One row a point (projection/points.npz, named): real pairs and distilled pairs, images and texts."""
    x: np.ndarray         # float64 (n,)
    y: np.ndarray         # float64 (n,)
    kind: np.ndarray      # str (n,): image | text
    source: np.ndarray    # str (n,): real | distilled
    status: np.ndarray    # str (n,): a STATUS_NAMES value
    item: np.ndarray      # int64 (n,): the real pair id, or the distilled index of a distilled point
    meta: dict            # projection/meta.json

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Layer:
    """Points of one status drawn together: one trace."""
    name: str             # the status name (legend)
    colour: str           # hex colour
    size: float           # marker size, px
    opacity: float
    points: np.ndarray    # int64 point indices into Points
    x: np.ndarray
    y: np.ndarray
    item: np.ndarray      # pair id or distilled index of each point
    labels: Optional[list] = None   # text drawn at each point (the distilled index), or None


@dataclass
class MapView:
    kind: str             # image | text
    layers: list          # Layer, in draw order: real statuses first, distilled last
    shown: int            # points drawn
    total: int            # points of this kind in the projection

    def note(self) -> str:
        return f"{self.kind}s: {self.shown} of {self.total} points shown"


@dataclass
class Sample:
    image: np.ndarray     # uint8 (S, S, 3)
    text: str             # what the point is and its caption (or decoded caption)


def _names(codes, table: dict) -> np.ndarray:
    inv = {int(v): k for k, v in table.items()}
    return np.array([inv[int(c)] for c in np.asarray(codes)], dtype=object).astype(str)


def load_points(run_dir: str) -> Optional[Points]:
    """The run's projection, named; None when the projection stage has not written it."""
    if not os.path.isfile(points_path(run_dir)):
        return None
    p = load_projection(run_dir)
    source = _names(p["source"], SOURCE)
    status = np.array([STATUS_NAMES[int(c)] for c in p["status"]], dtype=object).astype(str)
    item = np.where(source == "distilled", p["distilled_id"], p["pair_id"]).astype(np.int64)
    return Points(np.asarray(p["x"], float), np.asarray(p["y"], float), _names(p["kind"], KIND), source, status,
                  item, p["meta"])


def projection_caption(meta: dict) -> str:
    """How the map was made, from projection/meta.json: the method and why (PCA when asked, or under
    `auto` below the run's `projection.pca_below` points, or with too few points for UMAP; UMAP; or the
    embeddings as they are when already 2-D), whose embeddings, how many points were fitted, and whether
    the real pairs were subsampled. A map's distances mean different things under PCA (a linear view)
    and UMAP (neighbourhoods), so the tab says which it shows. Keys a meta.json lacks read as unknown."""
    conf = (meta.get("signature") or {}).get("config") or {}
    method, asked = str(meta.get("method", "?")), str(conf.get("method", "auto"))
    n = int(meta.get("n_fitted", meta.get("n_points", 0)))
    if method == "pca":
        below = max(int(conf.get("pca_below", 1000)), 4)
        why = ("projection.method=pca" if asked == "pca" else
               f"{n:,} points, under projection.pca_below; UMAP from {below:,}" if asked == "auto" and n < below
               else "too few points for UMAP")
        how = f"PCA (a linear view; {why})"
    elif method == "umap":
        how = "UMAP (neighbourhoods kept, distances between clusters not)"
    elif method == "identity":
        how = "the coordinates as they are (the embeddings are already 2-D)"
    else:
        how = method
    text = f"Map: {how} of the {meta.get('model_resolved', meta.get('model', '?'))} embeddings, {n:,} points fitted"
    if meta.get("subsampled") and "n_pairs_kept" in meta and "n_pairs_total" in meta:
        text += f"; real pairs subsampled, {int(meta['n_pairs_kept']):,} of {int(meta['n_pairs_total']):,}"
    return text


def _style(status: str, n_real: int) -> tuple:
    """(size px, opacity) of a status' markers."""
    if status == "distilled":
        return 13.0, 1.0
    return (4.0, 0.45) if n_real > DENSE else (7.0, 0.8)


def embedding_map(pts: Points, kind: str, statuses: Sequence[str] = tuple(STATUS_NAMES.values()),
                  sources: Sequence[str] = SOURCES, max_real: int = DRAW_REAL, seed: int = 0) -> MapView:
    """The points of one kind (image | text) with a shown status and source, as layers in draw order;
    above max_real real points, a seeded uniform sample of max_real of them (every distilled point is
    drawn; MapView.shown says how many are). ValueError for an unknown kind."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    of_kind = pts.kind == kind
    keep = of_kind & np.isin(pts.status, list(statuses)) & np.isin(pts.source, list(sources))
    real = np.flatnonzero(keep & (pts.source == "real"))
    if len(real) > max_real:
        keep[np.random.default_rng(seed).choice(real, len(real) - max_real, replace=False)] = False
    n_real = int((of_kind & (pts.source == "real")).sum())
    layers = []
    for name in STATUS_NAMES.values():
        sel = np.flatnonzero(keep & (pts.status == name))
        if not len(sel):
            continue
        size, opacity = _style(name, n_real)
        labels = [str(int(i)) for i in pts.item[sel]] if name == "distilled" else None
        layers.append(Layer(name, PALETTE[name], size, opacity, sel, pts.x[sel], pts.y[sel], pts.item[sel], labels))
    return MapView(kind, layers, int(keep.sum()), int(of_kind.sum()))


def point_rows(pts: Points, views: Sequence[MapView], limit: int = TABLE_ROWS) -> list:
    """[point, kind, source, item, status] of the shown points, distilled first, at most `limit`."""
    idx = np.concatenate([layer.points for v in views for layer in v.layers] or [np.zeros(0, np.int64)])
    idx = idx[np.argsort(pts.source[idx] != "distilled", kind="stable")][:limit]
    return [[int(i), str(pts.kind[i]), str(pts.source[i]), int(pts.item[i]), str(pts.status[i])] for i in idx]


def first_distilled_point(pts: Points) -> Optional[int]:
    """The image point of distilled pair 0 (else the first distilled point, else the first point)."""
    for mask in ((pts.source == "distilled") & (pts.kind == "image"), pts.source == "distilled",
                 np.ones(len(pts), bool)):
        hit = np.flatnonzero(mask)
        if len(hit):
            return int(hit[np.argmin(pts.item[hit])])
    return None


def point_sample(run_view, distill_view, pts: Points, point) -> Sample:
    """The sample behind a point: the real pair's image and caption, or the distilled pair's image and
    decoded caption. ValueError for a point index outside the projection."""
    i = int(point)
    if not 0 <= i < len(pts):
        raise ValueError(f"no point {i} (the map has {len(pts)})")
    item = int(pts.item[i])
    if pts.source[i] == "distilled":
        j = distill_view.check_index(item)
        return Sample(distill_view.distilled().images_u8()[j],
                      f"distilled pair {j} ({pts.kind[i]} point): “{distill_view.text_label(j)}”")
    return Sample(run_view.pair_image(item), f"real pair {item} ({pts.status[i]}, {pts.kind[i]} point): "
                                             f"“{run_view.caption(item)}”")
