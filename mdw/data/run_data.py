"""A run's own data (run format 2), written once by the data stage and read by every later stage
and the app without touching the data source or the decoded-image cache:

  data/images.npy   (n_images, S, S, 3) uint8, opened memory-mapped (a hard link to the cache entry
                    when the cache is on the same file system, else a copy: the run never depends
                    on the cache staying)
  data/table/       the pair table, one .npy per column, each memory-mappable:
                    pair_image, true_image (n_pairs,) int64; is_noisy (n_pairs,) uint8;
                    caption_offsets (n_pairs + 1,) int64 + caption_utf8 (bytes,) uint8;
                    image_split (n_images,) uint8 code into SPLITS; image_key_offsets + image_key_utf8;
                    truth.json (scenes' boxes and word objects) when the source has them
  data/pairs.json   identity (source, config, fingerprint), counts, skipped items, the noise record
                    (eta, seed, count; the picked pairs are where pair_image != true_image); written
                    LAST, so its presence marks complete data

    write_run_data(layout, prepared, cfg.data)      # the data stage
    p = open_run_data(layout)                       # a Prepared whose images are the run's memmap
    problems = verify_run_data(layout, cfg.data)    # `mdw data verify RUN`: re-read the source
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Optional

import numpy as np
from ..config import DataConfig
from ..errors import DataError
from ..runs.layout import RunLayout
from ..runs.store import atomic_save, atomic_write_json, read_json
from .columns import StringColumn, save_strings
from .image_array import ArrayImages
from .noise import Noise
from .pairset import SPLITS, PairSet
from .prepare import Prepared

TABLE_FILES = ("pair_image", "true_image", "is_noisy", "caption_offsets", "caption_utf8", "image_split",
               "image_key_offsets", "image_key_utf8")


# ----- images -----------------------------------------------------------------------------------

def _link_or_copy(src: str, dst: str) -> str:
    """Put `src` at `dst` atomically: a hard link when both are on one file system, else a copy.
    Returns "link" or "copy"."""
    tmp = f"{dst}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        os.link(src, tmp)
        how = "link"
    except OSError:
        shutil.copyfile(src, tmp)
        how = "copy"
    os.replace(tmp, dst)
    return how


def _remove_leftovers(layout: RunLayout) -> None:
    """What a data stage killed half way left in data/: .table-* folders and images.npy.tmp-* files
    (only the data stage writes there, and one worker at a time runs a run)."""
    images = os.path.basename(os.fspath(layout.images))
    for name in os.listdir(layout.data_dir):
        path = os.path.join(layout.data_dir, name)
        if name.startswith(".table-") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(images + ".tmp-") and os.path.isfile(path):
            os.remove(path)


# ----- write ------------------------------------------------------------------------------------

def write_run_data(layout: RunLayout, p: Prepared, cfg: DataConfig) -> dict:
    """Write data/images.npy, data/table/ and (last) data/pairs.json for the prepared data `p`.
    Returns the pairs.json record. Overwrites an earlier, unfinished data stage's files."""
    os.makedirs(layout.data_dir, exist_ok=True)
    _remove_leftovers(layout)
    if p.images_path and os.path.isfile(p.images_path):
        how = _link_or_copy(p.images_path, os.fspath(layout.images))
    else:
        atomic_save(layout.images, lambda tmp: np.save(tmp, np.asarray(p.images)))
        how = "write"
    ps = p.pairs
    tmp_table = tempfile.mkdtemp(prefix=".table-", dir=layout.data_dir)
    os.chmod(tmp_table, os.stat(layout.data_dir).st_mode & 0o777)   # mkdtemp's 0700 would hide it from others
    try:
        np.save(os.path.join(tmp_table, "pair_image.npy"), ps.pair_image.astype(np.int64))
        np.save(os.path.join(tmp_table, "true_image.npy"), ps.true_image.astype(np.int64))
        noisy = np.zeros(ps.n_pairs, bool) if ps.is_noisy is None else np.asarray(ps.is_noisy, bool)
        np.save(os.path.join(tmp_table, "is_noisy.npy"), noisy.astype(np.uint8))
        codes = {s: i for i, s in enumerate(SPLITS)}
        np.save(os.path.join(tmp_table, "image_split.npy"),
                np.asarray([codes[str(s)] for s in ps.image_split], dtype=np.uint8))
        save_strings(tmp_table, "caption", ps.captions)
        save_strings(tmp_table, "image_key", [ps.images.key(i) for i in range(ps.n_images)])
        if ps.boxes is not None or ps.word_objects is not None:
            with open(os.path.join(tmp_table, "truth.json"), "w", encoding="utf-8") as f:
                json.dump({"boxes": ps.boxes, "word_objects": ps.word_objects}, f)
        if os.path.isdir(layout.table):
            shutil.rmtree(layout.table)
        os.replace(tmp_table, layout.table)
    finally:
        if os.path.isdir(tmp_table):
            shutil.rmtree(tmp_table, ignore_errors=True)
    record = {
        "source": ps.name,
        "config": {"source": cfg.source, "path": cfg.path, "image_root": cfg.image_root,
                   "image_size": cfg.image_size},
        "fingerprint": p.fingerprint,
        "counts": ps.counts(),
        "n_images": int(ps.n_images),
        "n_pairs": int(ps.n_pairs),
        "skipped": ps.skipped,
        "skipped_examples": ps.skipped_examples,
        "noise": {"eta": p.noise.eta, "seed": p.noise.seed, "count": int(len(p.noise.pairs))},
        "images_stored_as": how,
    }
    atomic_write_json(layout.data_record, record)
    return record


# ----- read -------------------------------------------------------------------------------------

class RunTable:
    """The run's data opened memory-mapped, for readers that want a few rows (the app): nothing is
    read until used. Raises DataError naming the missing file when the run has no complete data
    (before its data stage finished, or a format-1 run not yet upgraded)."""

    def __init__(self, layout: RunLayout):
        for need in (layout.data_record, layout.images, layout.table):
            if not os.path.exists(need):
                raise DataError(f"{layout.root}: the run has no {os.path.relpath(need, layout.root)} "
                                "(its data stage has not finished)")
        self.layout = layout
        self.record = read_json(layout.data_record)
        t = os.fspath(layout.table)
        self.images = np.load(layout.images, mmap_mode="r")             # (n_images, S, S, 3) uint8
        self.pair_image = self._col("pair_image")                        # (n_pairs,) int64
        self.true_image = self._col("true_image")                        # (n_pairs,) int64
        self.is_noisy = self._col("is_noisy")                            # (n_pairs,) uint8
        self.image_split = self._col("image_split")                      # (n_images,) uint8 code into SPLITS
        self.captions = StringColumn(t, "caption")
        self.image_keys = StringColumn(t, "image_key")
        if self.images.shape[0] != len(self.image_split) or len(self.captions) != len(self.pair_image):
            raise DataError(f"{layout.data_dir}: images ({self.images.shape[0]}) or captions "
                            f"({len(self.captions)}) do not match the pair table; run the data stage again")

    def _col(self, name: str) -> np.ndarray:
        return np.load(os.path.join(os.fspath(self.layout.table), f"{name}.npy"), mmap_mode="r")

    @property
    def n_pairs(self) -> int:
        return len(self.pair_image)

    def truth(self) -> dict:
        path = os.path.join(os.fspath(self.layout.table), "truth.json")
        if not os.path.isfile(path):
            return {}
        with open(path, encoding="utf-8") as f:
            return json.load(f)


def open_run_data(layout: RunLayout) -> Prepared:
    """The run's data as its data stage wrote it: a Prepared whose PairSet reads images from the
    run's memmap (never the source or the cache); captions are materialised as a list. Raises
    DataError as RunTable does."""
    t = RunTable(layout)
    record, truth = t.record, t.truth()
    pair_image = np.asarray(t.pair_image, dtype=np.int64)
    true_image = np.asarray(t.true_image, dtype=np.int64)
    ps = PairSet(
        name=record["source"],
        images=ArrayImages(t.image_keys, t.images, np.arange(len(t.image_keys)), f"run-data:{record['fingerprint']}"),
        image_split=np.asarray(SPLITS, dtype=object)[np.asarray(t.image_split)],
        captions=t.captions.to_list(),
        pair_image=pair_image,
        true_image=true_image,
        is_noisy=np.asarray(t.is_noisy).astype(bool),
        boxes=truth.get("boxes"),
        word_objects=truth.get("word_objects"),
        skipped=dict(record.get("skipped") or {}),
        skipped_examples=list(record.get("skipped_examples") or []),
    )
    picked = np.flatnonzero(pair_image != true_image)
    n = record["noise"]
    noise = Noise(float(n["eta"]), int(n["seed"]), picked, pair_image[picked])
    return Prepared(ps, t.images, noise, record["fingerprint"], os.fspath(layout.images))


def upgrade_format1_data(layout: RunLayout) -> bool:
    """Migration step of a format-1 run (its data/pairs.json held every pair and later stages
    re-read the source): rebuild the data from the source with the recorded noise, check the
    fingerprint, and write the run's own data. False when there is nothing to upgrade. Raises
    DataError naming the source when it cannot be read or no longer gives the recorded data."""
    from ..config import RunConfig
    from .prepare import prepare

    if not os.path.isfile(layout.data_record):
        return False
    record = read_json(layout.data_record)
    if "pairs" not in record:
        return False
    cfg = RunConfig.from_dict(read_json(layout.config))
    where = cfg.data.path or cfg.data.source
    try:
        p = prepare(cfg.data, cfg.resolved_cache_dir(), noise=Noise.from_dict(record["noise"]))
    except DataError as e:
        raise DataError(f"{layout.root}: this run was written by an older version that read its data from the "
                        f"source on every stage; upgrading it needs the source once ({where}): {e}") from None
    if p.fingerprint != record["fingerprint"]:
        raise DataError(f"{layout.root}: cannot upgrade: the source {where} changed since the run's data stage "
                        f"(fingerprint {p.fingerprint} != recorded {record['fingerprint']})")
    write_run_data(layout, p, cfg.data)
    return True


def run_captions(layout: RunLayout) -> StringColumn:
    """The run's captions, memory-mapped: caption i without reading the others."""
    return StringColumn(os.fspath(layout.table), "caption")


# ----- verify -----------------------------------------------------------------------------------

def verify_run_data(layout: RunLayout, cfg: DataConfig, cache_dir: Optional[str] = None,
                    progress=None) -> list:
    """Re-read the run's source (decoding into `cache_dir`, a fresh temporary folder by default,
    so no cache is trusted) and compare it with the run's own data. Returns a list of problems
    (empty: the run matches its source). Raises DataError when the source cannot be read."""
    from .prepare import prepare

    run = open_run_data(layout)
    own_tmp = cache_dir is None
    cache_dir = cache_dir or tempfile.mkdtemp(prefix="mdw-verify-")
    try:
        src = prepare(cfg, cache_dir, progress, noise=run.noise)
        problems = []
        if src.fingerprint != run.fingerprint:
            problems.append(f"fingerprint: source {src.fingerprint}, run {run.fingerprint}")
        a, b = src.pairs, run.pairs
        if (a.n_images, a.n_pairs) != (b.n_images, b.n_pairs):
            problems.append(f"size: source {a.n_images} images / {a.n_pairs} pairs, "
                            f"run {b.n_images} / {b.n_pairs}")
            return problems
        diff = [i for i in range(a.n_pairs) if a.captions[i] != b.captions[i]]
        if diff:
            problems.append(f"captions: {len(diff)} differ, first pair {diff[0]}: {a.captions[diff[0]]!r} "
                            f"(source) vs {b.captions[diff[0]]!r} (run)")
        for name in ("pair_image", "true_image"):
            if not np.array_equal(getattr(a, name), getattr(b, name)):
                problems.append(f"{name}: differs from the source with the recorded noise")
        keys = [j for j in range(a.n_images) if a.images.key(j) != b.images.key(j)]
        if keys:
            problems.append(f"image keys: {len(keys)} differ, first image {keys[0]}: {a.images.key(keys[0])!r} "
                            f"(source) vs {b.images.key(keys[0])!r} (run)")
        moved = np.flatnonzero(np.asarray(a.image_split, dtype=str) != np.asarray(b.image_split, dtype=str))
        if len(moved):
            j = int(moved[0])
            problems.append(f"splits: {len(moved)} image(s) in another split, first {b.images.key(j)!r}: "
                            f"{a.image_split[j]} (source) vs {b.image_split[j]} (run)")
        bad_images = [j for lo in range(0, a.n_images, 1024)
                      for j in _differing_rows(src.images, run.images, lo, min(a.n_images, lo + 1024))]
        if bad_images:
            problems.append(f"images: {len(bad_images)} differ, first {b.images.key(bad_images[0])!r}")
        return problems
    finally:
        if own_tmp:
            shutil.rmtree(cache_dir, ignore_errors=True)


def source_matches(layout: RunLayout, cfg: DataConfig, cache_dir: str) -> bool:
    """Whether the source still gives the data the run recorded (same fingerprint: the same images
    and captions); reads the source through the decoded-image cache. False when it cannot be read."""
    from .prepare import prepare
    try:
        recorded = read_json(layout.data_record)["fingerprint"]
        return prepare(cfg, cache_dir).fingerprint == recorded
    except (DataError, OSError, ValueError, KeyError):
        return False


def _differing_rows(x: np.ndarray, y: np.ndarray, lo: int, hi: int) -> list:
    same = (np.asarray(x[lo:hi]) == np.asarray(y[lo:hi])).reshape(hi - lo, -1).all(axis=1)
    return (np.flatnonzero(~same) + lo).tolist()
