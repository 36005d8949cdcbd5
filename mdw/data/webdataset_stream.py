"""Webdataset shards read and decoded in one pass into the image cache (bounded memory).

`cached_webdataset` streams the shards (`webdataset.iter_samples`), checks each sample as it passes
(`accept_sample`), and hands its image bytes to a chunk that is decoded in threads and appended to
an `ImageArrayWriter` once it holds CHUNK images or CHUNK_BYTES of encoded bytes: no more encoded
bytes than that are ever held, whatever the number of shards. Captions are kept in memory.

The cache entry (cache_dir/images/<key>-<S>px.*) is keyed by the shards (names, sizes, modification times, a hash of the
first MiB of each: `shards_identity`), the image size and VERSION:
  .npy        (n_good, S, S, 3) uint8, the images that decoded, in order
  .pairs/     the PairSet read from the shards as columns (columns.py: names and captions as UTF-8 +
              offsets, split codes, pair_image) + counts.json (rows, skip counts and examples): a hit
              parses no JSON list of a million captions
  .bad.json   [(image index, error)] of the images that did not decode; written last
A second read of the same shards at the same size is a hit: no shard is streamed or decoded again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

from ..errors import DataError
from ..runs.store import atomic_write_json
from .columns import StringColumn, save_strings
from .decode import open_image
from .image_array import ArrayImages, ImageArrayWriter, decode_chunk
from .image_cache import CHUNK, cache_paths, decode_workers, read_entry
from .pairset import SPLITS, PairSet
from .readers import Collector
from .webdataset import accept_sample, find_shards, iter_samples, shards_identity

CHUNK_BYTES = 8 << 20      # encoded bytes held before a chunk is decoded
VERSION = "wds-v2"        # v2: the pairs record as columns (v1: one JSON)


def cached_webdataset(path: str, size: int, cache_dir: str, max_skip_fraction: float = 0.05,
                      progress: Optional[Callable[[float], None]] = None) -> tuple:
    """(ps, array, bad) for the shards at `path` (folder, .tar file or glob), decoded at `size` px.

    ps: the PairSet of every accepted sample, its images an `ArrayImages` over `array` (images that
    did not decode have no row; drop them with `ps.drop_images([i for i, _ in bad], ...)`, after
    which row i of `array` is image i). array: read-only np.memmap (n_good, size, size, 3) uint8.
    bad: [(image index, error text)]. DataError for a file that is not a tar archive, no shards, no
    usable pair, or more than `max_skip_fraction` of the samples skipped."""
    shards = find_shards(path)
    ident = shards_identity(shards)
    # the key adds the shards' modification times (the identity hashes only each one's first MiB):
    # a shard edited in place at the same size is read again; a copied folder is decoded again
    stamps = "|".join(str(os.stat(s).st_mtime_ns) for s in shards)
    key = hashlib.sha1(f"{ident}|{stamps}|{size}|{VERSION}".encode()).hexdigest()[:20]
    arr_path, bad_path = cache_paths(cache_dir, key, size)
    pairs_dir = arr_path[:-len(".npy")] + ".pairs"
    name = f"webdataset:{path}"
    hit = _read_hit(arr_path, bad_path, pairs_dir, size)
    if hit is not None:
        record, arr, bad = hit
        c = Collector(name)
        c.captions, c.rows, c.skipped, c.examples = record["captions"], record["rows"], record["skipped"], record["examples"]
        c.check(max_skip_fraction)
        if progress:
            progress(1.0)
        return _pairset(name, record, arr, bad, ident), arr, bad
    c = Collector(name)
    with ImageArrayWriter(arr_path, size) as w:
        bad = _stream_decode(shards, c, size, w, progress)
        ps = c.finish(ArrayImages(list(c.names), None, np.zeros(0), ident), max_skip_fraction)
        arr = w.finish()
    record = {"names": c.names, "splits": ps.image_split, "captions": ps.captions, "pair_image": ps.pair_image,
              "rows": c.rows, "skipped": ps.skipped, "examples": ps.skipped_examples}
    _write_record(pairs_dir, record)
    atomic_write_json(bad_path, bad)    # written last: it marks a complete entry
    return _pairset(name, record, arr, bad, ident), arr, bad


def _write_record(folder: str, record: dict) -> None:
    """The PairSet's columns into `folder` (written in a temp folder, then renamed over it)."""
    tmp = f"{folder}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_strings(tmp, "name", record["names"])
    save_strings(tmp, "caption", record["captions"])
    codes = {s: i for i, s in enumerate(SPLITS)}
    np.save(os.path.join(tmp, "split.npy"), np.fromiter((codes[str(s)] for s in record["splits"]), dtype=np.uint8,
                                                      count=len(record["splits"])))
    np.save(os.path.join(tmp, "pair_image.npy"), np.asarray(record["pair_image"], dtype=np.int64))
    with open(os.path.join(tmp, "counts.json"), "w", encoding="utf-8") as f:
        json.dump({k: record[k] for k in ("rows", "skipped", "examples")}, f)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _stream_decode(shards: list, c: Collector, size: int, w: ImageArrayWriter,
                   progress: Optional[Callable[[float], None]]) -> list:
    """Stream every sample into `c` and every accepted image into `w`; returns bad [(index, error)]."""
    bad: list = []
    pending: list = []                  # (image index, encoded bytes), at most one chunk
    held = n_images = 0
    with ThreadPoolExecutor(decode_workers()) as pool:
        def flush():
            nonlocal held
            rows, b = decode_chunk(pool, pending, lambda blob: open_image(blob, size), size)
            w.append(rows)
            bad.extend(b)
            pending.clear()
            held = 0

        for shard, key, parts in iter_samples(shards, c, progress):
            i, ext = accept_sample(c, shard, key, parts)
            if i == n_images:             # a new image (a repeated name adds a caption only)
                n_images += 1
                pending.append((i, parts[ext][1]))
                held += len(parts[ext][1])
                if len(pending) >= CHUNK or held >= CHUNK_BYTES:
                    flush()
        if pending:
            flush()
    return bad


def _read_hit(arr_path: str, bad_path: str, pairs_dir: str, size: int) -> Optional[tuple]:
    """(record, array, bad) of a complete cache entry; None on a miss or an unreadable entry."""
    try:
        with open(os.path.join(pairs_dir, "counts.json"), encoding="utf-8") as f:
            record = json.load(f)
        names = StringColumn(pairs_dir, "name")       # memory-mapped: keys are read when asked for
        record.update(names=names, captions=StringColumn(pairs_dir, "caption").to_list(),
                      splits=np.asarray(SPLITS, dtype=object)[np.load(os.path.join(pairs_dir, "split.npy"))],
                      pair_image=np.load(os.path.join(pairs_dir, "pair_image.npy")))
    except (OSError, ValueError, KeyError):
        return None
    entry = read_entry(arr_path, bad_path, len(names), size)
    return None if entry is None else (record,) + entry


def _pairset(name: str, record: dict, arr: np.ndarray, bad: list, ident: str) -> PairSet:
    n = len(record["names"])
    rows = np.full(n, -1, dtype=np.int64)
    good = np.setdiff1d(np.arange(n), np.asarray([i for i, _ in bad], dtype=np.int64))
    if len(good) != len(arr):
        raise DataError(f"{name}: the image cache holds {len(arr)} images, expected {len(good)}")
    rows[good] = np.arange(len(good))
    return PairSet(name=name, images=ArrayImages(record["names"], arr, rows, ident),
                   image_split=np.asarray(record["splits"], dtype=object), captions=record["captions"],
                   pair_image=np.asarray(record["pair_image"], dtype=np.int64),
                   skipped=dict(record["skipped"]), skipped_examples=list(record["examples"]))
