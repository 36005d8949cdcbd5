"""Decoded, resized images of a PairSet as one uint8 array (n_images, S, S, 3), cached on disk.

An epoch over 30k pairs at 64 px then reads memory, not JPEGs. Images are centre-cropped to a
square and resized with antialiasing. Images that fail to decode are returned as `bad` (the caller
drops them and counts them as skipped); their rows are left black.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

from ..runs.store import atomic_save, atomic_write_json
from .decode import to_square
from .pairset import PairSet

_CHUNK = 256


def decode_all(ps: PairSet, size: int, progress: Optional[Callable[[float], None]] = None,
               workers: int = 0) -> tuple:
    """(array, bad): decode every image of `ps`; `bad` lists (index, error text)."""
    n = ps.n_images
    out = np.zeros((n, size, size, 3), dtype=np.uint8)
    bad = []

    def one(i):
        try:
            out[i] = to_square(ps.images.open(i, size), size)
            return None
        except Exception as e:  # corrupt, truncated, unreadable: reported by the caller
            return (i, f"{type(e).__name__}: {e}")

    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, n, _CHUNK):
            for r in pool.map(one, range(start, min(n, start + _CHUNK))):
                if r is not None:
                    bad.append(r)
            if progress:
                progress(min(n, start + _CHUNK) / max(n, 1))
    return out, bad


def cache_key(ps: PairSet, size: int) -> str:
    # v2: images decoded by decode.open_image (EXIF orientation, 16-bit and alpha), not PIL's convert
    return hashlib.sha1(f"{ps.images.identity()}|{size}|v2".encode()).hexdigest()[:20]


def cached_images(ps: PairSet, size: int, cache_dir: str,
                  progress: Optional[Callable[[float], None]] = None) -> tuple:
    """(array, bad) from `cache_dir/images/`, decoding and saving on a miss (atomic rename)."""
    folder = os.path.join(cache_dir, "images")
    os.makedirs(folder, exist_ok=True)
    base = os.path.join(folder, f"{cache_key(ps, size)}-{size}px")
    arr_path, bad_path = base + ".npy", base + ".bad.json"
    if os.path.exists(arr_path) and os.path.exists(bad_path):
        with open(bad_path, encoding="utf-8") as f:
            bad = [tuple(b) for b in json.load(f)]
        arr = np.load(arr_path, mmap_mode="r")
        if arr.shape == (ps.n_images, size, size, 3):
            if progress:
                progress(1.0)
            return arr, bad
    arr, bad = decode_all(ps, size, progress)
    atomic_save(arr_path, lambda tmp: np.save(tmp, arr))
    atomic_write_json(bad_path, bad)   # written last: it marks a complete entry
    return arr, bad
