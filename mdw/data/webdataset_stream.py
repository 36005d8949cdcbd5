"""Webdataset shards read and decoded in one pass into the image cache (bounded memory).

`cached_webdataset` streams the shards (`webdataset.iter_samples`), checks each sample as it passes
(`accept_sample`), and hands its image bytes to a chunk that is decoded in threads and appended to
an `ImageArrayWriter` once it holds CHUNK images or CHUNK_BYTES of encoded bytes: no more encoded
bytes than that are ever held, whatever the number of shards. Captions are kept in memory.

The cache entry (cache_dir/images/<key>-<S>px.*) is keyed by the shards (names, sizes, modification times, a hash of the
first MiB of each: `shards_identity`), the image size and VERSION:
  .npy        (n_good, S, S, 3) uint8, the images that decoded, in order
  .pairs.json the PairSet read from the shards (names, splits, captions, skip counts)
  .bad.json   [(image index, error)] of the images that did not decode; written last
A second read of the same shards at the same size is a hit: no shard is streamed or decoded again.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

from ..errors import DataError
from ..runs.store import atomic_write_json
from .decode import open_image
from .image_array import ArrayImages, ImageArrayWriter, decode_chunk
from .image_cache import CHUNK, cache_paths, decode_workers, read_entry
from .pairset import PairSet
from .readers import Collector
from .webdataset import accept_sample, find_shards, iter_samples, shards_identity

CHUNK_BYTES = 8 << 20      # encoded bytes held before a chunk is decoded
VERSION = "wds-v1"


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
    pairs_path = arr_path[:-len(".npy")] + ".pairs.json"
    name = f"webdataset:{path}"
    hit = _read_hit(arr_path, bad_path, pairs_path, size)
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
    record = {"names": list(c.names), "splits": [str(s) for s in ps.image_split], "captions": ps.captions,
              "pair_image": ps.pair_image.tolist(), "rows": c.rows, "skipped": ps.skipped,
              "examples": ps.skipped_examples}
    atomic_write_json(pairs_path, record)
    atomic_write_json(bad_path, bad)    # written last: it marks a complete entry
    return _pairset(name, record, arr, bad, ident), arr, bad


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


def _read_hit(arr_path: str, bad_path: str, pairs_path: str, size: int) -> Optional[tuple]:
    if not os.path.exists(pairs_path):
        return None
    try:
        with open(pairs_path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    entry = read_entry(arr_path, bad_path, len(record.get("names", ())), size)
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
