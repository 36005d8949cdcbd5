"""The Noisy pairs tab's view: one page of the filtered, sorted pairs (sorted on the server, once per
filter/sort; only the page's rows are built), which pair it opens on, a pair's detail with its word maps, and the
one CSV export of audit decisions and cleaned pairs (its clean-score threshold in the file name).

    v = RunView(run_dir)
    page = pairs_page(v, "flagged", sort="clean", page=2, page_size=50)   # PairsPage: rows 51-100, total, summary
    pair = first_flagged_pair(v)             # lowest clean score among flagged pairs (None: no scores)
    d = pair_detail(v, pair)                 # PairDetail: image, caption, scores, word-map grid + note
    files = export_audit(v, threshold=0.5)   # AuditExport: decisions.csv, cleaned_pairs_clean-ge-0.50.csv
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..runs.view import COLUMNS, RunView

HEATMAP_GROUPS = ("most_trusted", "least_trusted", "app")   # where a real pair's stored maps may be
TILE = 112   # px of one word-map tile
PAGE_SIZE = 50
PAGE_SIZES = (25, 50, 100, 200)
MAX_PAGE_SIZE = 1000   # rows one page may build and send
SORT_NAMES = {"clean": "clean score", "track_A": "track A score", "track_B": "track B score", "pair": "pair id"}


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


@dataclass
class PairsPage:
    rows: list                   # dicts with RunView's COLUMNS (pair, caption, clean, track_A, track_B, flagged,
                                 # noisy, audit), this page's only: at most page_size
    total: int                   # pairs passing the filters
    page: int                    # 1-based, clamped to [1, n_pages]
    n_pages: int                 # >= 1 (one empty page when nothing passes)
    page_size: int
    start: int                   # 0-based position of the first row in the filtered, sorted list
    summary: str                 # "rows 51–100 of 12,345 flagged training pairs, lowest clean score first"

    def table(self) -> list:
        """The rows as lists in COLUMNS order (None shown as "")."""
        return [[r[c] if r[c] is not None else "" for c in COLUMNS] for r in self.rows]


def pairs_page(view: RunView, flag: str = "all", truth: str = "all", lo: float = 0.0, hi: float = 1.0,
               sort: str = "clean", descending: bool = False, page: int = 1, page_size: int = PAGE_SIZE) -> PairsPage:
    """One page of the scored training pairs passing the filters (flag in FLAG_FILTERS, truth in
    TRUTH_FILTERS, lo <= clean score <= hi), sorted by `sort` (a SORT_KEYS key: clean, track_A,
    track_B, pair; ties by pair id). The sort is done once per filter/sort (RunView.pair_order);
    only the page's rows are built. A page past the end is the last page, one below 1 the first.
    ValueError for an unknown filter or sort key or a page_size outside [1, MAX_PAGE_SIZE]."""
    page_size = int(page_size)
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page size must be in [1, {MAX_PAGE_SIZE}], got {page_size}")
    order = view.pair_order(flag, truth, lo, hi, sort, descending)
    total = len(order)
    n_pages = max(1, -(-total // page_size))
    page = min(max(1, int(page)), n_pages)
    start = (page - 1) * page_size
    rows = view.rows_at(order[start:start + page_size])
    has_truth = view.scores() is not None and view.scores()["is_noisy"] is not None
    return PairsPage(rows, total, page, n_pages, page_size, start,
                     _summary(start, len(rows), total, flag, truth if has_truth else "all", lo, hi, sort, descending))


def _summary(start, n, total, flag, truth, lo, hi, sort, descending) -> str:
    what = {"all": "", "flagged": "flagged ", "not flagged": "unflagged "}[flag]
    what += {"all": "", "noisy": "truly noisy ", "clean": "truly clean "}[truth] + "training pairs"
    if float(lo) > 0 or float(hi) < 1:
        what += f" with a clean score in [{float(lo):.2f}, {float(hi):.2f}]"
    if not total:
        return f"no {what}"
    order = f"{'highest' if descending else 'lowest'} {SORT_NAMES[sort]} first"
    return f"rows {start + 1:,}–{start + n:,} of {total:,} {what}, {order}"


def first_flagged_pair(view: RunView) -> Optional[int]:
    """The flagged pair with the lowest clean score; the lowest-scored pair when none is flagged;
    None before the experts stage has written scores."""
    for flag in ("flagged", "all"):
        order = view.pair_order(flag)
        if len(order):
            return int(view.scores()["pair_ids"][order[0]])
    return None


def word_maps(view: RunView, pair: int) -> WordMapGrid:
    """The stored per-word map grid of a real pair (any group), or a note saying how to make it."""
    row = None
    for g in HEATMAP_GROUPS:
        row = row if row is not None else view.find_heatmap(g, pair)
    if row is None:
        return WordMapGrid(None, "No stored heatmap for this pair: press “Compute heatmaps”.")
    return grid_of_row(view, row, f"per-word maps ({view.heatmap_item(row).group})")


def grid_of_row(view: RunView, row: int, note: str) -> WordMapGrid:
    """The word-map grid of stored heatmap item `row`, its note plus a cut-context warning."""
    from ..heatmaps.render import word_grid
    item = view.heatmap_item(row)
    cut = f"; ⚠️ {item.maps.cut_note()}" if item.maps.cut else ""
    return WordMapGrid(word_grid(item.image, item.maps, tile=TILE), note + cut)


def computed_word_maps(view: RunView, pair: int) -> WordMapGrid:
    """Compute (and store, group "app") the word maps of a real pair with the run's expert."""
    return grid_of_row(view, view.compute_pair_heatmap(pair), "per-word maps (computed now)")


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
