"""The Noisy pairs tab's view: which pair it opens on, a pair's detail with its word maps, and the
one CSV export of audit decisions and cleaned pairs (its clean-score threshold in the file name).

    v = RunView(run_dir)
    pair = first_flagged_pair(v)             # lowest clean score among flagged pairs (None: no scores)
    d = pair_detail(v, pair)                 # PairDetail: image, caption, scores, word-map grid + note
    files = export_audit(v, threshold=0.5)   # AuditExport: decisions.csv, cleaned_pairs_clean-ge-0.50.csv
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..runs.view import RunView

HEATMAP_GROUPS = ("most_trusted", "least_trusted", "app")   # where a real pair's stored maps may be
TILE = 112   # px of one word-map tile


@dataclass
class WordMapGrid:
    grid: Optional[np.ndarray]   # uint8 (H, W, 3): the image and one overlay per word; None when none stored
    note: str                    # where the maps come from, or how to get them; a cut-context warning


@dataclass
class PairDetail:
    pair: int
    caption: str
    image: np.ndarray            # uint8 (S, S, 3)
    clean: float                 # DTCL consensus clean score in [0, 1] (NaN when not scored)
    track_a: float
    track_b: float
    flagged: Optional[bool]      # None when not scored
    noisy: Optional[bool]        # ground truth; None when unknown
    maps: WordMapGrid

    def truth_text(self) -> str:
        return {True: "noisy (injected)", False: "clean", None: "unknown"}[self.noisy]


@dataclass
class AuditExport:
    decisions: str               # path of audit/decisions.csv
    cleaned_pairs: str           # path of audit/cleaned_pairs_clean-ge-<threshold>.csv
    threshold: float             # pairs kept: clean score >= threshold, unless audited otherwise
    kept: int                    # rows of the cleaned pair list

    def paths(self) -> list:
        return [self.decisions, self.cleaned_pairs]

    def summary(self) -> str:
        return (f"{self.kept} pairs kept (clean score ≥ {self.threshold:.2f}, audited clean kept, audited noisy "
                "dropped) and every audit decision exported")


def first_flagged_pair(view: RunView) -> Optional[int]:
    """The flagged pair with the lowest clean score; the lowest-scored pair when none is flagged;
    None before the experts stage has written scores."""
    for flag in ("flagged", "all"):
        rows = view.pair_rows(flag, limit=1)
        if rows:
            return int(rows[0]["pair"])
    return None


def word_maps(view: RunView, pair: int) -> WordMapGrid:
    """The stored per-word Grad-CAM grid of a real pair (any group), or a note saying how to make it."""
    row = None
    for g in HEATMAP_GROUPS:
        row = row if row is not None else view.find_heatmap(g, pair)
    if row is None:
        return WordMapGrid(None, "No stored heatmap for this pair: press “Compute heatmaps”.")
    return grid_of_row(view, row, f"per-word Grad-CAM maps ({view.heatmap_item(row).group})")


def grid_of_row(view: RunView, row: int, note: str) -> WordMapGrid:
    """The word-map grid of stored heatmap item `row`, its note plus a cut-context warning."""
    from ..heatmaps.render import word_grid
    item = view.heatmap_item(row)
    cut = f"; ⚠️ {item.maps.cut_note()}" if item.maps.cut else ""
    return WordMapGrid(word_grid(item.image, item.maps, tile=TILE), note + cut)


def computed_word_maps(view: RunView, pair: int) -> WordMapGrid:
    """Compute (and store, group "app") the word maps of a real pair with the run's expert."""
    return grid_of_row(view, view.compute_pair_heatmap(pair), "per-word Grad-CAM maps (computed now)")


def pair_detail(view: RunView, pair, compute_missing: bool = False) -> PairDetail:
    """Everything the pair panel shows; with compute_missing, word maps not stored yet are computed
    with the run's expert (when it has one). ValueError for a pair id the run does not have."""
    pair = view.check_pair(pair)
    maps = word_maps(view, pair)
    if maps.grid is None and compute_missing and view.scores() is not None:
        maps = computed_word_maps(view, pair)
    sc = view.pair_scores(pair) or {}
    nan = float("nan")
    return PairDetail(pair, view.caption(pair), view.pair_image(pair), sc.get("clean", nan), sc.get("track_A", nan),
                      sc.get("track_B", nan), sc.get("flagged"), sc.get("noisy"), maps)


def export_audit(view: RunView, threshold: float) -> AuditExport:
    """Write audit/decisions.csv and the cleaned pair list at `threshold` (clean score in [0, 1]);
    ValueError for a threshold outside [0, 1]. Both files are written atomically."""
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"export threshold must be in [0, 1], got {threshold}")
    path, kept = view.cleaned_pairs_csv(threshold)
    return AuditExport(view.decisions_csv(), path, threshold, kept)
