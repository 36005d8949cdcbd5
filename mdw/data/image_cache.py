"""Decoded, resized images of a PairSet as one uint8 .npy (n_good, S, S, 3), cached on disk.

An epoch over 30k pairs at 64 px then reads memory, not JPEGs. Images are centre-cropped to a
square and resized with antialiasing, a chunk at a time in threads, straight into a memory-mapped
file (`image_array.ImageArrayWriter`): memory use does not grow with the data set. Images that fail
to decode are not written: the array holds only the good images, in order, and `bad` lists
(index, error) so that the caller drops those images from the PairSet (`PairSet.drop_images`),
after which row i of the array is image i of the PairSet.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

from ..runs.store import atomic_write_json
from .image_array import ImageArrayWriter, decode_chunk, open_image_array
from .pairset import PairSet

CHUNK = 256            # images decoded (and held) at a time
VERSION = "v3"         # v3: only the good images are stored (v2 kept black rows for bad ones)


def decode_workers(workers: int = 0) -> int:
    return workers or min(4, os.cpu_count() or 1)


def decode_into(ps: PairSet, size: int, append: Callable[[np.ndarray], None],
                progress: Optional[Callable[[float], None]] = None, workers: int = 0) -> list:
    """Decode every image of `ps`, CHUNK at a time, passing each chunk's good rows
    ((k, size, size, 3) uint8, in image order) to `append`. Returns bad: [(index, error text)]."""
    n = ps.n_images
    bad: list = []
    with ThreadPoolExecutor(decode_workers(workers)) as pool:
        for start in range(0, n, CHUNK):
            items = [(i, i) for i in range(start, min(n, start + CHUNK))]
            rows, b = decode_chunk(pool, items, lambda i: ps.images.open(i, size), size)
            append(rows)
            bad += b
            if progress:
                progress(min(n, start + CHUNK) / max(n, 1))
    return bad


def decode_all(ps: PairSet, size: int, progress: Optional[Callable[[float], None]] = None,
               workers: int = 0) -> tuple:
    """(array, bad) in memory, for small sets: array (n_good, size, size, 3) uint8 of the images
    that decoded, in order; bad [(index, error text)] of those that did not."""
    chunks: list = []
    bad = decode_into(ps, size, chunks.append, progress, workers)
    return (np.concatenate(chunks) if chunks else np.zeros((0, size, size, 3), np.uint8)), bad


def cache_key(ps: PairSet, size: int) -> str:
    return hashlib.sha1(f"{ps.images.identity()}|{size}|{VERSION}".encode()).hexdigest()[:20]


def cache_paths(cache_dir: str, key: str, size: int) -> tuple:
    """(array .npy, bad .json) of a cache entry under cache_dir/images/; the .bad.json is written
    last and marks a complete entry."""
    base = os.path.join(cache_dir, "images", f"{key}-{size}px")
    return base + ".npy", base + ".bad.json"


def read_entry(arr_path: str, bad_path: str, n_good: Optional[int] = None, size: int = 0) -> Optional[tuple]:
    """(memmap, bad) of a complete cache entry, or None when it is missing, unreadable or (given
    n_good/size) not the expected shape."""
    if not (os.path.exists(arr_path) and os.path.exists(bad_path)):
        return None
    try:
        with open(bad_path, encoding="utf-8") as f:
            bad = [tuple(b) for b in json.load(f)]
        arr = open_image_array(arr_path)
    except (OSError, ValueError):
        return None
    if arr.ndim != 4 or arr.shape[3] != 3 or (size and arr.shape[1:3] != (size, size)):
        return None
    if n_good is not None and len(arr) != n_good - len(bad):
        return None
    return arr, bad


def cached_images(ps: PairSet, size: int, cache_dir: str,
                  progress: Optional[Callable[[float], None]] = None) -> tuple:
    """(array, bad): `array` a read-only np.memmap (n_good, size, size, 3) uint8 of the images of
    `ps` that decode, in order (its file is `array.filename`); `bad` [(index, error text)] of the
    others. Read from cache_dir/images/<key>-<size>px.npy, or decoded and written there on a miss."""
    arr_path, bad_path = cache_paths(cache_dir, cache_key(ps, size), size)
    hit = read_entry(arr_path, bad_path, ps.n_images, size)
    if hit is not None:
        if progress:
            progress(1.0)
        return hit
    with ImageArrayWriter(arr_path, size) as w:
        bad = decode_into(ps, size, w.append, progress)
        arr = w.finish()
    atomic_write_json(bad_path, bad)   # written last: it marks a complete entry
    return arr, bad
