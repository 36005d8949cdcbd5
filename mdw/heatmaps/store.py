"""Precomputed heatmaps in the run folder: heatmaps/maps.npz + heatmaps/index.json.

maps.npz (no pickles; strings are numpy unicode arrays), one row per (image, caption) item:
  group (P,) str          which set the item belongs to: most_trusted | least_trusted | distilled | ...
  item_id (P,) int64      the pair id (real pairs: index in data/pairs.json) or the distilled index
  caption (P,) str
  images (P, S, S, 3)     uint8, the image the caption was shown with
  pair_score (P,)         float32 s(v, t)
  clean_score (P,)        float32 DTCL consensus score (NaN when unknown)
  is_noisy (P,)           int8: 1 / 0, -1 when unknown
  word_start (P + 1,)     int64: the words of item p are rows word_start[p]:word_start[p+1]
  words (W,) str, word_pos (W,) int32 (index in caption.split(), -1: not aligned)
  word_score (W,)         float32 s(v, w)
  maps (W, S, S)          float16 in [0, 1]
  sentence_maps (P, S, S) float16: the Grad-CAM of s(v, t)
  generation ()           str: a random stamp of this write, also in index.json (see below)
index.json: {"version", "generation", "image_size", "model": {...}, "groups": {name: count}, "items": [{"row",
  "group", "item_id", "caption", "words", "positions", "scores", "pair_score", "clean_score",
  "is_noisy"}]} for listing without opening the arrays.
Both files are written atomically; `append_items` replaces the rows of the groups it writes.

Two writers (the distill stage in the worker, on-demand maps from the app, other app processes)
append by read-modify-write, so every write holds heatmaps/.lock from reading maps.npz to writing
index.json: appends are serialised and none is lost. Readers take no lock: the two files are
replaced one after the other (maps first), each write stamps both with a new random `generation`
(maps.npz holds it as a 0-d str array), and `read_store` returns the pair only when the stamps
agree; when they differ (a write in progress, or a writer killed between the two files) it waits
for the lock and reads again, and a still stale index is rebuilt from maps.npz for that reader.
"""
from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..runs.layout import RunLayout
from ..runs.store import atomic_save, atomic_write_json, file_lock, read_json
from .compute import WordMaps

VERSION = 1
ITEM_KEYS = ("group", "item_id", "caption", "images", "pair_score", "clean_score", "is_noisy", "sentence_maps",
             "words_encoded", "words_total")   # the last two: -1 when not known (stores written before them)
WORD_KEYS = ("words", "word_pos", "word_score", "maps")


def maps_path(run_dir) -> str:
    return os.fspath(RunLayout(run_dir).heatmap_maps)


def index_path(run_dir) -> str:
    return os.fspath(RunLayout(run_dir).heatmap_index)


def lock_path(run_dir) -> str:
    return os.fspath(RunLayout(run_dir).heatmap_lock)


@dataclass
class HeatmapItem:
    """One stored item, as the app shows it."""
    group: str
    item_id: int
    image: np.ndarray          # (S, S, 3) uint8
    maps: WordMaps             # maps as float32
    clean_score: float
    is_noisy: int


def pack(group: str, item_ids: Sequence[int], images_u8: np.ndarray, wms: Sequence[WordMaps],
         clean_scores: Optional[Sequence[float]] = None, is_noisy: Optional[Sequence[int]] = None) -> dict:
    """Arrays for items (image p with WordMaps p), in the maps.npz layout."""
    n = len(wms)
    if len(item_ids) != n or len(images_u8) != n:
        raise ValueError(f"heatmaps: {n} word-map sets, {len(item_ids)} ids, {len(images_u8)} images")
    size = int(images_u8.shape[1]) if n else 0
    counts = [len(w.words) for w in wms]
    maps = [w.maps for w in wms if len(w.words)]
    sent = [w.sentence_map if w.sentence_map is not None else np.zeros((size, size), np.float32) for w in wms]
    return {
        "group": np.array([group] * n, dtype=str),
        "item_id": np.asarray(item_ids, dtype=np.int64),
        "caption": np.array([w.caption for w in wms], dtype=str),
        "images": np.asarray(images_u8, dtype=np.uint8).reshape(n, size, size, 3),
        "pair_score": np.array([w.pair_score for w in wms], dtype=np.float32),
        "clean_score": np.asarray(clean_scores if clean_scores is not None else [np.nan] * n, dtype=np.float32),
        "is_noisy": np.asarray(is_noisy if is_noisy is not None else [-1] * n, dtype=np.int8),
        "words_encoded": np.array([-1 if w.words_encoded is None else w.words_encoded for w in wms], dtype=np.int32),
        "words_total": np.array([-1 if w.words_total is None else w.words_total for w in wms], dtype=np.int32),
        "sentence_maps": np.stack(sent).astype(np.float16) if n else np.zeros((0, size, size), np.float16),
        "word_start": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "words": np.array([t for w in wms for t in w.words], dtype=str),
        "word_pos": np.array([p for w in wms for p in w.positions], dtype=np.int32),
        "word_score": np.concatenate([w.scores for w in wms] + [np.zeros(0, np.float32)]).astype(np.float32),
        "maps": np.concatenate(maps).astype(np.float16) if maps else np.zeros((0, size, size), np.float16),
    }


def concat(a: dict, b: dict) -> dict:
    """Two packed sets as one (b's words after a's)."""
    if not a or len(a["item_id"]) == 0:
        return b
    if len(b["item_id"]) == 0:
        return a
    if a["images"].shape[1:] != b["images"].shape[1:]:
        raise ValueError(f"heatmaps: image size {a['images'].shape[1]} stored, {b['images'].shape[1]} appended")
    out = {k: np.concatenate([a[k], b[k]]) for k in ITEM_KEYS + WORD_KEYS}
    out["word_start"] = np.concatenate([a["word_start"], b["word_start"][1:] + a["word_start"][-1]])
    return out


def select_rows(packed: dict, keep: np.ndarray) -> dict:
    """The packed items `keep` (bool mask or indices over items), words re-indexed."""
    keep = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=np.int64)
    ws = packed["word_start"]
    word_rows = np.concatenate([np.arange(ws[i], ws[i + 1]) for i in keep] + [np.zeros(0, np.int64)]).astype(np.int64)
    out = {k: packed[k][keep] for k in ITEM_KEYS}
    out.update({k: packed[k][word_rows] for k in WORD_KEYS})
    out["word_start"] = np.concatenate([[0], np.cumsum(ws[keep + 1] - ws[keep])]).astype(np.int64)
    return out


def _load(run_dir: str) -> tuple:
    """(maps.npz arrays without the stamp, its generation or None); ({}, None) without a file."""
    path = maps_path(run_dir)
    if not os.path.isfile(path):
        return {}, None
    with np.load(path, allow_pickle=False) as z:
        out, stamp = {k: z[k] for k in z.files if k != "generation"}, _stamp(z)
    return out, stamp


def _stamp(z) -> Optional[str]:
    return str(z["generation"]) if "generation" in z.files else None  # runs written before the stamp: None


def load_packed(run_dir: str) -> dict:
    """maps.npz as a dict of arrays ({} when there is none)."""
    return _load(run_dir)[0]


def stored_generation(run_dir: str) -> Optional[str]:
    """The generation stamp of maps.npz (None without a file or a stamp); reads only the stamp."""
    path = maps_path(run_dir)
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        return _stamp(z)


def read_store(run_dir: str) -> tuple:
    """(index, packed) of one and the same write: index.json as a dict (with "items", "generation";
    {} without a store) and maps.npz as arrays (load_packed). Takes the lock only when the two
    files disagree (module docstring)."""
    def both():
        index = read_json(index_path(run_dir)) if os.path.isfile(index_path(run_dir)) else {}
        packed, gen = _load(run_dir)
        return index, packed, gen
    index, packed, gen = both()
    if index.get("generation") == gen and bool(index) == bool(packed):
        return index, packed
    with file_lock(lock_path(run_dir)):  # a write in progress finishes first
        index, packed, gen = both()
    if index.get("generation") != gen or bool(index) != bool(packed):  # a writer died between the files
        index = _index(packed, index.get("model", {}), gen) if packed else {}
    return index, packed


def _finite(v: float):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


def write_packed(run_dir: str, packed: dict, model_info: Optional[dict] = None) -> None:
    """Replace the run's heatmaps by `packed`: maps.npz then index.json, both atomically, under
    the store's lock (RunError when another writer holds it for minutes)."""
    with file_lock(lock_path(run_dir)):
        _write(run_dir, packed, model_info)


def _write(run_dir: str, packed: dict, model_info: Optional[dict]) -> None:
    """write_packed's body; the caller holds the lock."""
    gen = secrets.token_hex(8)
    atomic_save(maps_path(run_dir), lambda tmp: np.savez_compressed(tmp, **{**packed, "generation": np.array(gen)}))
    old = read_json(index_path(run_dir)) if os.path.isfile(index_path(run_dir)) else {}
    atomic_write_json(index_path(run_dir), _index(packed, model_info or old.get("model", {}), gen))


def _index(packed: dict, model_info: dict, gen: Optional[str]) -> dict:
    """index.json's content for the packed arrays."""
    ws = packed["word_start"]
    items = []
    for i in range(len(packed["item_id"])):
        a, b = int(ws[i]), int(ws[i + 1])
        items.append({"row": i, "group": str(packed["group"][i]), "item_id": int(packed["item_id"][i]),
                      "caption": str(packed["caption"][i]), "words": [str(w) for w in packed["words"][a:b]],
                      "positions": [int(p) for p in packed["word_pos"][a:b]],
                      "scores": [round(float(s), 4) for s in packed["word_score"][a:b]],
                      "pair_score": _finite(float(packed["pair_score"][i])),
                      "clean_score": _finite(float(packed["clean_score"][i])),
                      "is_noisy": int(packed["is_noisy"][i])})
    groups: dict = {}
    for g in packed["group"]:
        groups[str(g)] = groups.get(str(g), 0) + 1
    return {"version": VERSION, "generation": gen,
            "image_size": int(packed["images"].shape[1]) if len(items) else None,
            "model": model_info, "groups": groups, "n_items": len(items),
            "n_words": int(len(packed["words"])), "items": items}


def append_items(run_dir: str, new: dict, model_info: Optional[dict] = None, replace_groups: bool = True) -> dict:
    """Add packed items to the run's heatmaps (replacing stored rows of the same groups by default);
    returns the stored arrays. Holds the store's lock from reading to writing (module docstring)."""
    with file_lock(lock_path(run_dir)):
        old = load_packed(run_dir)
        if old and replace_groups:
            old = select_rows(old, ~np.isin(old["group"], np.unique(new["group"])))
        merged = concat(old, new)
        _write(run_dir, merged, model_info)
    return merged


def load_item(run_dir: str, row: int, packed: Optional[dict] = None) -> HeatmapItem:
    """Stored item `row` (see index.json's items) with its maps as float32."""
    z = packed or load_packed(run_dir)
    if not z or not (0 <= row < len(z["item_id"])):
        raise IndexError(f"heatmaps: no stored item {row} in {maps_path(run_dir)}")
    a, b = int(z["word_start"][row]), int(z["word_start"][row + 1])
    wm = WordMaps(str(z["caption"][row]), [str(w) for w in z["words"][a:b]], [int(p) for p in z["word_pos"][a:b]],
                  z["maps"][a:b].astype(np.float32), z["word_score"][a:b].astype(np.float32),
                  float(z["pair_score"][row]), z["sentence_maps"][row].astype(np.float32),
                  *(None if int(z[k][row]) < 0 else int(z[k][row]) for k in ("words_encoded", "words_total")))
    return HeatmapItem(str(z["group"][row]), int(z["item_id"][row]), z["images"][row], wm,
                       float(z["clean_score"][row]), int(z["is_noisy"][row]))
