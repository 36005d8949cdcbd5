"""A finished (or running) run folder as the app shows it: pairs, images, DTCL scores, detection,
stored heatmaps, audit decisions and exports. Everything loads lazily and tolerates missing files
(a run still in its first stages): methods return None / [] when the stage has not written them.

    v = RunView(store.run_dir(run_id))                       # upgrades an older run first (open_run)
    rows = v.pair_rows(flag="flagged", lo=0.0, hi=0.5)      # sorted by the clean score, lowest first
    img = v.pair_image(rows[0]["pair"])                      # uint8 (S, S, 3)
The distilled set, snapshots and evaluation live in `view_distill.py` (DistillView).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ..config import RunConfig
from ..csvio import write_csv
from .audit import latest_decisions
from .migrate import open_run
from .store import atomic_write_text, read_json, read_jsonl

FLAG_FILTERS = ("all", "flagged", "not flagged")
TRUTH_FILTERS = ("all", "noisy", "clean")
CLEANED_COLUMNS = ("pair", "image", "caption", "clean_score", "audit")


class RunView:
    def __init__(self, run_dir):
        self.layout = open_run(run_dir)
        self.run_dir = os.fspath(self.layout.root)
        self._record = None
        self._images = None
        self._scores = None
        self._curves = None
        self._heat = None

    # ----- files ----------------------------------------------------------------------------
    def config(self) -> dict:
        return read_json(self.layout.config)

    def status(self) -> dict:
        return read_json(self.layout.status)

    def events(self, stage: Optional[str] = None) -> list:
        return [e for e in read_jsonl(self.layout.events) if stage is None or e.get("stage") == stage]

    # ----- pairs and images -----------------------------------------------------------------
    def record(self) -> Optional[dict]:
        """data/pairs.json (None before the data stage)."""
        if self._record is None and self.layout.data_record.is_file():
            self._record = read_json(self.layout.data_record)
        return self._record

    def n_pairs(self) -> int:
        rec = self.record()
        return len(rec["pairs"]["caption"]) if rec else 0

    def caption(self, pair: int) -> str:
        return self.record()["pairs"]["caption"][self.check_pair(pair)]

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
        """All the run's images as uint8 (n_images, S, S, 3), from the decoded-image cache."""
        if self._images is None:
            from ..data.prepare import load_prepared
            cfg = RunConfig.from_dict(self.config())
            self._images = load_prepared(self.record(), cfg.data, cfg.resolved_cache_dir()).images
        return self._images

    def pair_image(self, pair: int) -> np.ndarray:
        pair = self.check_pair(pair)
        return self.images()[int(self.record()["pairs"]["image"][pair])]

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
            z = load_scores(self.run_dir, kind)
            last = {k: np.asarray(z[k][-1]) for k in ("consensus", "wA", "wB", "flag")}
            last["pair_ids"] = np.asarray(z["pair_ids"], dtype=np.int64)
            last["is_noisy"] = np.asarray(z["is_noisy"]).astype(bool) if "is_noisy" in z else None
            last["kind"] = kind
            self._scores = last
        return self._scores

    def pair_rows(self, flag: str = "all", truth: str = "all", lo: float = 0.0, hi: float = 1.0,
                  limit: Optional[int] = None, descending: bool = False) -> list:
        """Scored training pairs, filtered, sorted by the clean score (lowest first by default),
        each with its latest audit decision."""
        s = self.scores()
        if s is None:
            return []
        if flag not in FLAG_FILTERS or truth not in TRUTH_FILTERS:
            raise ValueError(f"filters: flag one of {FLAG_FILTERS}, truth one of {TRUTH_FILTERS}")
        keep = (s["consensus"] >= float(lo)) & (s["consensus"] <= float(hi))
        flags = s["flag"].astype(bool)
        if flag != "all":
            keep &= flags if flag == "flagged" else ~flags
        if truth != "all" and s["is_noisy"] is not None:
            keep &= s["is_noisy"] if truth == "noisy" else ~s["is_noisy"]
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(s["consensus"][idx], kind="stable")]
        if descending:
            idx = idx[::-1]
        if limit is not None:
            idx = idx[:int(limit)]
        decided = latest_decisions(self.run_dir, "pair")
        caps = self.record()["pairs"]["caption"]
        rows = []
        for i in idx:
            pid = int(s["pair_ids"][i])
            rows.append({"pair": pid, "caption": caps[pid], "clean": round(float(s["consensus"][i]), 4),
                         "track_A": round(float(s["wA"][i]), 4), "track_B": round(float(s["wB"][i]), 4),
                         "flagged": bool(flags[i]),
                         "noisy": None if s["is_noisy"] is None else bool(s["is_noisy"][i]),
                         "audit": decided.get(pid, {}).get("decision", "")})
        return rows

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
        """{"metrics", "curves"} of the clean score against the ground truth (None without it)."""
        from ..evaluate.detection import detection_curves, detection_metrics
        s = self.scores()
        if s is None or s["is_noisy"] is None or not 0 < s["is_noisy"].sum() < len(s["is_noisy"]):
            return None
        if self._curves is None:  # independent of the threshold; the scores are loaded once per view
            self._curves = detection_curves(s["consensus"], s["is_noisy"])
        return {"metrics": detection_metrics(s["consensus"], s["is_noisy"], threshold), "curves": self._curves}

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
        rec = self.record()["pairs"]
        out = []
        for i, pid in enumerate(s["pair_ids"]):
            pid = int(pid)
            d = decided.get(pid, {}).get("decision")
            keep = d == "clean" or (d != "noisy" and float(s["consensus"][i]) >= threshold)
            if keep:
                out.append({"pair": pid, "image": self.record()["images"]["key"][rec["image"][pid]],
                            "caption": rec["caption"][pid], "clean_score": round(float(s["consensus"][i]), 4),
                            "audit": d or ""})
        return out

    def cleaned_pairs_csv(self, threshold: float) -> tuple:
        """Write audit/cleaned_pairs_clean-ge-<threshold, 2 decimals>.csv (atomically; text cells
        escaped against spreadsheet formulas, see mdw/csvio.py): (its path, rows written)."""
        rows = self.cleaned_pairs(threshold)
        name = f"cleaned_pairs_clean-ge-{float(threshold):.2f}.csv"
        return write_csv(self.layout.audit_file(name), CLEANED_COLUMNS, rows), len(rows)

    def decisions_csv(self) -> str:
        """Write audit/decisions.csv (atomically; escaped like the cleaned pair list) and return its path."""
        from .audit import decisions_csv
        return atomic_write_text(self.layout.audit_file("decisions.csv"), decisions_csv(self.run_dir))
