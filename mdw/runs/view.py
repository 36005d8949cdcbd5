"""A finished (or running) run folder as the app shows it: pairs, images, DTCL scores, detection,
stored heatmaps, audit decisions and exports. Everything loads lazily and tolerates missing files
(a run still in its first stages): methods return None / [] when the stage has not written them.

    v = RunView(store.run_dir(run_id))                       # upgrades an older run first (open_run)
    rows = v.pair_rows(flag="flagged", lo=0.0, hi=0.5)      # sorted by the clean score, lowest first
    order = v.pair_order("flagged", sort="track_A", descending=True)   # int64 positions, cached per filter/sort
    img = v.pair_image(rows[0]["pair"])                      # uint8 (S, S, 3)
The distilled set, snapshots and evaluation live in `view_distill.py` (DistillView).
"""
from __future__ import annotations

import os
import threading
from typing import Optional

import numpy as np

from ..csvio import write_csv
from .audit import latest_decisions
from .layout import RunLayout
from .migrate import open_run
from .store import atomic_write_text, read_json, read_jsonl

FLAG_FILTERS = ("all", "flagged", "not flagged")
TRUTH_FILTERS = ("all", "noisy", "clean")
CLEANED_COLUMNS = ("pair", "image", "caption", "clean_score", "audit")
COLUMNS = ("pair", "caption", "clean", "track_A", "track_B", "flagged", "noisy", "audit")   # of rows_at()
SORT_KEYS = {"clean": "consensus", "track_A": "wA", "track_B": "wB", "pair": "pair_ids"}   # sort key -> scores()
ORDER_CACHE = 8   # sorted filter/sort combinations a view keeps (8 B a pair each)


class RunView:
    def __init__(self, run_dir):
        self.layout = open_run(run_dir)
        self.run_dir = os.fspath(self.layout.root)
        self._table = None
        self._scores = None
        self._curves = None
        self._heat = None
        self._orders: dict = {}   # pair_order's cache: (filters, sort, descending) -> positions
        self._orders_lock = threading.Lock()
        self._pair_order = None   # the app's handlers share a view across threads

    # ----- files ----------------------------------------------------------------------------
    def config(self) -> dict:
        return read_json(self.layout.config)

    def status(self) -> dict:
        return read_json(self.layout.status)

    def events(self, stage: Optional[str] = None) -> list:
        return [e for e in read_jsonl(self.layout.events) if stage is None or e.get("stage") == stage]

    # ----- pairs and images -----------------------------------------------------------------
    def table(self):
        """The run's own data, memory-mapped (mdw/data/run_data.py RunTable); None before the data
        stage has finished."""
        if self._table is None:
            from ..data.run_data import RunTable
            from ..errors import DataError
            try:
                self._table = RunTable(RunLayout(self.run_dir))
            except DataError:
                return None
        return self._table

    def record(self) -> Optional[dict]:
        """data/pairs.json (None before the data stage)."""
        t = self.table()
        return t.record if t is not None else None

    def n_pairs(self) -> int:
        t = self.table()
        return t.n_pairs if t is not None else 0

    def caption(self, pair: int) -> str:
        return self.table().captions[self.check_pair(pair)]

    def captions(self, pairs) -> list:
        """The captions of `pairs` (ids), read from the memory-mapped table one by one."""
        return [self.caption(p) for p in pairs]

    def check_pair(self, pair) -> int:
        n = self.n_pairs()
        try:
            pair = int(pair)
        except (TypeError, ValueError):
            raise ValueError(f"pair id must be an integer, got {pair!r}") from None
        if not 0 <= pair < n:
            raise ValueError(f"no pair {pair} in this run (it has {n})")
        return pair

    def images(self) -> np.ndarray:
        """All the run's images as uint8 (n_images, S, S, 3), memory-mapped from data/images.npy."""
        return self.table().images

    def pair_image(self, pair: int) -> np.ndarray:
        pair = self.check_pair(pair)
        return np.asarray(self.images()[int(self.table().pair_image[pair])])

    # ----- DTCL scores ----------------------------------------------------------------------
    def scores(self) -> Optional[dict]:
        """The last epoch's per-pair scores of the run's experts (RunLayout.main_expert_kind):
        pair_ids (n,) int64, consensus / wA / wB (n,) float, flag (n,) bool, is_noisy (n,) bool or
        None, kind; None before the experts stage."""
        if self._scores is None:
            from ..train.experts_io import load_scores
            kind = self.layout.main_expert_kind()
            if kind is None or not self.layout.scores(kind).is_file():
                return None
            z = load_scores(self.run_dir, kind, ("consensus", "wA", "wB", "flag", "pair_ids", "is_noisy"))
            last = {k: np.asarray(z[k][-1]) for k in ("consensus", "wA", "wB", "flag")}
            last["flag"] = last["flag"].astype(bool)
            last["pair_ids"] = np.asarray(z["pair_ids"], dtype=np.int64)
            last["is_noisy"] = np.asarray(z["is_noisy"]).astype(bool) if "is_noisy" in z else None
            last["kind"] = kind
            self._scores = last
        return self._scores

    def pair_order(self, flag: str = "all", truth: str = "all", lo: float = 0.0, hi: float = 1.0,
                   sort: str = "clean", descending: bool = False) -> np.ndarray:
        """int64 (k,): positions in scores() of the pairs passing the filters (DTCL flag in
        FLAG_FILTERS, ground truth in TRUTH_FILTERS, lo <= clean score <= hi), sorted by `sort` (a
        SORT_KEYS key), ties by pair id ascending in both directions. One vectorised sort per
        filter/sort combination, kept (ORDER_CACHE of them) so paging never sorts again; read-only.
        Empty before the experts stage; ValueError for an unknown filter or sort key."""
        s = self.scores()
        if flag not in FLAG_FILTERS or truth not in TRUTH_FILTERS:
            raise ValueError(f"filters: flag one of {FLAG_FILTERS}, truth one of {TRUTH_FILTERS}")
        if sort not in SORT_KEYS:
            raise ValueError(f"sort key must be one of {tuple(SORT_KEYS)}, got {sort!r}")
        if s is None:
            return np.zeros(0, dtype=np.int64)
        key = (flag, truth, float(lo), float(hi), sort, bool(descending))
        with self._orders_lock:
            hit = self._orders.pop(key, None)
        if hit is None:
            keep = (s["consensus"] >= float(lo)) & (s["consensus"] <= float(hi))
            if flag != "all":
                keep &= s["flag"] if flag == "flagged" else ~s["flag"]
            if truth != "all" and s["is_noisy"] is not None:
                keep &= s["is_noisy"] if truth == "noisy" else ~s["is_noisy"]
            by_pair = self._by_pair()
            idx = by_pair[keep[by_pair]]            # in pair id order: a stable sort breaks ties by pair id
            values = s[SORT_KEYS[sort]][idx]
            if descending:
                values = -values.astype(np.float64) if values.dtype.kind == "f" else -values
            hit = idx[np.argsort(values, kind="stable")]
            hit.setflags(write=False)
        with self._orders_lock:
            self._orders[key] = hit   # most recently used last
            while len(self._orders) > ORDER_CACHE:
                self._orders.pop(next(iter(self._orders)))
        return hit

    def _by_pair(self) -> np.ndarray:
        """int64 (N,): positions in scores() in pair id order (computed once; the identity for a
        run whose scores are in pair id order, as the experts stage writes them)."""
        if self._pair_order is None:
            ids = self.scores()["pair_ids"]
            self._pair_order = (np.arange(len(ids)) if np.all(ids[1:] >= ids[:-1])
                                else np.argsort(ids, kind="stable"))
        return self._pair_order

    def rows_at(self, positions) -> list:
        """One dict per position in scores() (COLUMNS: pair, caption, clean, track_A, track_B,
        flagged, noisy, audit = its latest audit decision or ""); captions and decisions are read
        for these pairs only."""
        s = self.scores()
        if s is None:
            return []
        decided = latest_decisions(self.run_dir, "pair")
        rows = []
        for i in np.asarray(positions, dtype=np.int64):
            pid = int(s["pair_ids"][i])
            rows.append({"pair": pid, "caption": self.caption(pid), "clean": round(float(s["consensus"][i]), 4),
                         "track_A": round(float(s["wA"][i]), 4), "track_B": round(float(s["wB"][i]), 4),
                         "flagged": bool(s["flag"][i]),
                         "noisy": None if s["is_noisy"] is None else bool(s["is_noisy"][i]),
                         "audit": decided.get(pid, {}).get("decision", "")})
        return rows

    def pair_rows(self, flag: str = "all", truth: str = "all", lo: float = 0.0, hi: float = 1.0,
                  limit: Optional[int] = None, descending: bool = False, sort: str = "clean", start: int = 0) -> list:
        """rows_at() of pair_order()[start:start + limit] (all from start when limit is None):
        scored training pairs, filtered, sorted by the clean score (lowest first) by default."""
        order = self.pair_order(flag, truth, lo, hi, sort, descending)
        start = max(0, int(start))
        return self.rows_at(order[start:] if limit is None else order[start:start + max(0, int(limit))])

    def noise_split_note(self) -> str:
        """'' when the last epoch's loss mixtures split the pairs; otherwise the banner text
        "no noise split this epoch: …" (DTCL found no two components and flagged nothing)."""
        s = self.scores()
        if s is None:
            return ""
        from ..train.experts_io import experts_meta
        gmm = experts_meta(self.run_dir, s["kind"])["gmm"]
        why = [f"track {t}: {g['reason']}" for t, g in gmm.items() if not g.get("split", True)]
        return ("no noise split this epoch: " + "; ".join(why) + " (every pair is trusted, none flagged)") if why else ""

    def pair_scores(self, pair: int) -> Optional[dict]:
        s = self.scores()
        if s is None:
            return None
        hit = np.flatnonzero(s["pair_ids"] == int(pair))
        if not len(hit):
            return None
        i = int(hit[0])
        return {"clean": float(s["consensus"][i]), "track_A": float(s["wA"][i]), "track_B": float(s["wB"][i]),
                "flagged": bool(s["flag"][i]), "noisy": None if s["is_noisy"] is None else bool(s["is_noisy"][i])}

    def detection(self, threshold: float = 0.5) -> Optional[dict]:
        """{"metrics", "curves"} of the clean score against the ground truth (None without it): the
        metrics at the threshold plus the AUC of all pairs, the curves reduced for plotting
        (mdw.evaluate.detection.detection_curves, computed once per view)."""
        from ..evaluate.detection import detection_curves, threshold_metrics
        s = self.scores()
        if s is None or s["is_noisy"] is None or not 0 < s["is_noisy"].sum() < len(s["is_noisy"]):
            return None
        if self._curves is None:  # independent of the threshold; the scores are loaded once per view
            self._curves = detection_curves(s["consensus"], s["is_noisy"])
        metrics = {**threshold_metrics(s["consensus"], s["is_noisy"], threshold), "auc": self._curves["auc"]}
        return {"metrics": metrics, "curves": self._curves}

    # ----- heatmaps -------------------------------------------------------------------------
    def _heatmaps(self) -> tuple:
        """(index, packed) of the stored heatmaps, one write's pair (read_store); reloaded when
        another writer (the distill stage, another app) has replaced maps.npz since."""
        from ..heatmaps.store import read_store, stored_generation
        if self._heat is None or self._heat[0].get("generation") != stored_generation(self.run_dir):
            self._heat = read_store(self.run_dir)
        return self._heat

    def heatmap_items(self) -> list:
        """index.json's items (row, group, item_id, caption, words, scores, ...), [] without any."""
        return self._heatmaps()[0].get("items", [])

    def heatmap_item(self, row: int):
        """The stored item `row` of the latest heatmap_items() (IndexError when there is none)."""
        from ..heatmaps.store import load_item
        return load_item(self.run_dir, int(row), self._heatmaps()[1])

    def find_heatmap(self, group_prefix: str, item_id: int) -> Optional[int]:
        """Row of the stored item of a group starting with `group_prefix` about item_id, or None."""
        for it in self.heatmap_items():
            if it["item_id"] == int(item_id) and it["group"].startswith(group_prefix):
                return int(it["row"])
        return None

    def compute_pair_heatmap(self, pair: int) -> int:
        """Compute and store the word maps of one real pair (group "app"); returns its row."""
        from ..heatmaps.stage import compute_and_append
        from ..train.experts_io import load_expert
        pair = self.check_pair(pair)
        row = self.find_heatmap("app", pair)
        if row is None:
            for g in ("most_trusted", "least_trusted"):
                row = row if row is not None else self.find_heatmap(g, pair)
        if row is not None:
            return row
        model = load_expert(self.run_dir, self.layout.main_expert_kind(), "A", device="cpu")
        old = [it["item_id"] for it in self.heatmap_items() if it["group"] == "app"]
        ids = old + [pair]
        images = np.stack([self.pair_image(i) for i in ids])
        sc = [self.pair_scores(i) or {} for i in ids]
        compute_and_append(self.run_dir, model, "app", ids, images, [self.caption(i) for i in ids],
                           clean_scores=[d.get("clean", float("nan")) for d in sc],
                           is_noisy=[-1 if d.get("noisy") is None else int(d["noisy"]) for d in sc])
        self._heat = None
        return self.find_heatmap("app", pair)

    # ----- exports --------------------------------------------------------------------------
    def cleaned_pairs(self, threshold: float) -> list:
        """Training pairs kept after cleaning: clean score >= threshold, unless an audit decision
        says otherwise (audited "clean" keeps a pair, "noisy" drops it)."""
        s = self.scores()
        if s is None:
            return []
        decided = latest_decisions(self.run_dir, "pair")
        t = self.table()
        out = []
        for i, pid in enumerate(s["pair_ids"]):
            pid = int(pid)
            d = decided.get(pid, {}).get("decision")
            keep = d == "clean" or (d != "noisy" and float(s["consensus"][i]) >= threshold)
            if keep:
                out.append({"pair": pid, "image": t.image_keys[int(t.pair_image[pid])],
                            "caption": t.captions[pid], "clean_score": round(float(s["consensus"][i]), 4),
                            "audit": d or ""})
        return out

    def cleaned_pairs_csv(self, threshold: float) -> tuple:
        """Write audit/cleaned_pairs_clean-ge-<threshold, 2 decimals>.csv (atomically; text cells
        escaped against spreadsheet formulas, see mdw/csvio.py): (its path, rows written)."""
        rows = self.cleaned_pairs(threshold)
        return write_csv(self.layout.audit_cleaned_pairs(threshold), CLEANED_COLUMNS, rows), len(rows)

    def decisions_csv(self) -> str:
        """Write audit/decisions.csv (atomically; escaped like the cleaned pair list) and return its path."""
        from .audit import decisions_csv
        return atomic_write_text(self.layout.audit_decisions_csv, decisions_csv(self.run_dir))
