"""The one place that names a run folder's files and folders, says what a run has, and carries its
format version. Every module reaches a run's files through a `RunLayout`; no other module spells a
run-relative path. An older run is upgraded once, on open, by `mdw/runs/migrate.py` (`open_run`).

    lay = RunLayout(run_dir)
    lay.config, lay.status, lay.events, lay.log          top-level files
    lay.data_record, lay.images, lay.table              the run's own data (format 2: self-contained)
    lay.experts("dtcl").buffer("A"), lay.scores("plain") experts and their per-pair scores
    lay.expert_kinds()                                  which experts the run has (meta.json on disk)
    lay.main_expert_kind()                              the one rule for "the run's experts"

Paths are `pathlib.Path`s; nothing here creates folders (the atomic writers in `store.py` do).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

FORMAT_VERSION = 2      # 1: data re-read from the source by every stage; 2: run-local images + pair table
EXPERT_KINDS = ("dtcl", "plain", "filtered")


@dataclass(frozen=True)
class ExpertFiles:
    """experts/<kind>/: one expert family's trajectory buffers, final weights and meta."""
    folder: Path
    kind: str

    @property
    def meta(self) -> Path:
        return self.folder / "meta.json"

    def buffer(self, track: str) -> Path:
        """(epochs kept + 1, P) float32 trainable parameters after each epoch."""
        return self.folder / f"buffer_{track}.pt"

    def precond(self, track: str) -> Path:
        return self.folder / f"precond_{track}.pt"

    def final(self, track: str) -> Path:
        return self.folder / f"final_{track}.pt"

    @property
    def reference(self) -> Path:
        return self.folder / "reference.pt"

    @property
    def filter(self) -> Path:
        """filter.json of the `filtered` experts: which pairs they were trained on."""
        return self.folder / "filter.json"

    def exists(self) -> bool:
        return self.meta.is_file()


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __init__(self, root):
        object.__setattr__(self, "root", Path(os.path.abspath(os.fspath(root))))

    @property
    def run_id(self) -> str:
        return self.root.name

    # ----- top level --------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def status_lock(self) -> Path:
        return self.root / ".status.lock"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "log.txt"

    @property
    def migrate_lock(self) -> Path:
        """.migrate.lock: held while `open_run` upgrades the run (mdw/runs/migrate.py)."""
        return self.root / ".migrate.lock"

    @property
    def format(self) -> Path:
        """format.json: {"format": FORMAT_VERSION}; absent in runs of format 1."""
        return self.root / "format.json"

    # ----- data (written by the data stage) --------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def data_record(self) -> Path:
        """data/pairs.json: the source's identity, split sizes, skipped items, the noise record."""
        return self.data_dir / "pairs.json"

    @property
    def data_summary(self) -> Path:
        return self.data_dir / "summary.json"

    @property
    def images(self) -> Path:
        """data/images.npy: (n_images, S, S, 3) uint8, memory-mapped by every later stage."""
        return self.data_dir / "images.npy"

    @property
    def table(self) -> Path:
        """data/table/: the pair table, one .npy per column (mdw/data/run_data.py)."""
        return self.data_dir / "table"

    # ----- experts and scores ----------------------------------------------------------------
    @property
    def experts_dir(self) -> Path:
        return self.root / "experts"

    def experts(self, kind: str) -> ExpertFiles:
        """ValueError for a kind not in EXPERT_KINDS."""
        if kind not in EXPERT_KINDS:
            raise ValueError(f"expert kind must be one of {EXPERT_KINDS}, got {kind!r}")
        return ExpertFiles(self.experts_dir / kind, kind)

    @property
    def scores_dir(self) -> Path:
        return self.root / "dtcl"

    def scores(self, kind: str) -> Path:
        """Per-epoch × pair scores of `kind`'s experts (dtcl/scores.npz for DTCL)."""
        return self.scores_dir / ("scores.npz" if kind == "dtcl" else f"scores_{kind}.npz")

    def expert_summary(self, kind: str) -> Path:
        return self.scores_dir / ("summary.json" if kind == "dtcl" else f"summary_{kind}.json")

    def expert_kinds(self) -> list:
        """The expert families on disk (their meta.json written last), in EXPERT_KINDS order."""
        return [k for k in EXPERT_KINDS if self.experts(k).exists()]

    def scored_kinds(self) -> list:
        return [k for k in EXPERT_KINDS if self.scores(k).is_file()]

    def main_expert_kind(self, dtcl: Optional[bool] = None) -> Optional[str]:
        """The run's experts: `dtcl` when the run trains DTCL (dtcl=None: whichever is on disk,
        DTCL first), else `plain`; the other family when only it is on disk; None when neither."""
        order = ["plain", "dtcl"] if dtcl is False else ["dtcl", "plain"]
        have = set(self.expert_kinds()) | set(self.scored_kinds())
        return next((k for k in order if k in have), None)

    # ----- heatmaps ----------------------------------------------------------------------------
    @property
    def heatmaps_dir(self) -> Path:
        return self.root / "heatmaps"

    @property
    def heatmap_maps(self) -> Path:
        """heatmaps/maps.npz: the packed word maps (mdw/heatmaps/store.py)."""
        return self.heatmaps_dir / "maps.npz"

    @property
    def heatmap_index(self) -> Path:
        """heatmaps/index.json: one entry per stored item, and the write's generation."""
        return self.heatmaps_dir / "index.json"

    @property
    def heatmap_lock(self) -> Path:
        return self.heatmaps_dir / ".lock"

    # ----- distillation ------------------------------------------------------------------------
    @property
    def distill_dir(self) -> Path:
        return self.root / "distill"

    @property
    def distilled(self) -> Path:
        return self.distill_dir / "distilled.pt"

    @property
    def decoded(self) -> Path:
        return self.distill_dir / "decoded.json"

    @property
    def snapshots_dir(self) -> Path:
        return self.distill_dir / "snapshots"

    @property
    def snapshot_index(self) -> Path:
        return self.snapshots_dir / "index.json"

    def snapshot(self, iteration: int) -> Path:
        return self.snapshots_dir / f"it_{int(iteration):05d}.pt"

    @property
    def evolution_gif(self) -> Path:
        return self.distill_dir / "evolution.gif"

    # ----- evaluation, index, projection, audit -----------------------------------------------
    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def eval_results(self) -> Path:
        return self.eval_dir / "results.json"

    @property
    def eval_sets_dir(self) -> Path:
        return self.eval_dir / "sets"

    def eval_set(self, name: str) -> Path:
        """eval/sets/<method>.pt: the M pairs a method selected or distilled (a DistilledSet)."""
        return self.eval_sets_dir / f"{name}.pt"

    def eval_student(self, method: str, seed) -> Path:
        """eval/students/<method>/seed<seed>.pt: a student model saved by the evaluate stage."""
        return self.eval_dir / "students" / method / f"seed{int(seed)}.pt"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def index_meta(self) -> Path:
        """index/meta.json, written last: the index's model spec, sizes and search depth."""
        return self.index_dir / "meta.json"

    @property
    def index_images(self) -> Path:
        """index/images.faiss: the FAISS index of the split's image embeddings (mdw/evaluate/index.py)."""
        return self.index_dir / "images.faiss"

    @property
    def index_captions(self) -> Path:
        """index/captions.faiss: the FAISS index of the split's caption embeddings."""
        return self.index_dir / "captions.faiss"

    @property
    def index_image_emb(self) -> Path:
        """index/image_emb.npy: float32 (n_images, dim), L2-normalised."""
        return self.index_dir / "image_emb.npy"

    @property
    def index_caption_emb(self) -> Path:
        """index/caption_emb.npy: float32 (n_captions, dim), L2-normalised."""
        return self.index_dir / "caption_emb.npy"

    @property
    def index_images_u8(self) -> Path:
        """index/images_u8.npy: uint8 (n_images, S, S, 3), the split's images (index.store_images)."""
        return self.index_dir / "images_u8.npy"

    @property
    def index_items(self) -> Path:
        """index/items.json: the captions and which image each belongs to."""
        return self.index_dir / "items.json"

    @property
    def projection_dir(self) -> Path:
        return self.root / "projection"

    @property
    def projection_meta(self) -> Path:
        """projection/meta.json, written last: the method, the model and the inputs' signatures."""
        return self.projection_dir / "meta.json"

    @property
    def projection_points(self) -> Path:
        """projection/points.npz: the 2-D coordinates of every real and distilled point."""
        return self.projection_dir / "points.npz"

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"

    @property
    def audit_decisions(self) -> Path:
        return self.audit_dir / "decisions.jsonl"

    @property
    def audit_decisions_csv(self) -> Path:
        """audit/decisions.csv: the decisions exported for a spreadsheet."""
        return self.audit_dir / "decisions.csv"

    def audit_cleaned_pairs(self, threshold: float) -> Path:
        """audit/cleaned_pairs_clean-ge-<threshold, 2 decimals>.csv: the pairs kept at that threshold."""
        return self.audit_dir / f"cleaned_pairs_clean-ge-{float(threshold):.2f}.csv"

    # ----- what the run has -------------------------------------------------------------------
    def format_version(self) -> int:
        """The run's format: FORMAT_VERSION's value it was written with (1 when format.json is absent)."""
        import json
        try:
            with open(self.format, encoding="utf-8") as f:
                return int(json.load(f)["format"])
        except FileNotFoundError:
            return 1

    def has_data(self) -> bool:
        return self.data_record.is_file() and self.table.is_dir() and self.images.is_file()

    def has_distilled(self) -> bool:
        return self.distilled.is_file()
