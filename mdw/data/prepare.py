"""The data stage: source → PairSet → decoded image cache → corrupt images dropped → noise.

`prepare` is deterministic for a config. The data stage writes its result into the run folder
(run_data.py); later stages read the run's own copy, never this again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .image_cache import cached_images
from .noise import Noise, apply_noise, make_noise
from .pairset import PairSet
from .split_check import check_run_splits


@dataclass
class Prepared:
    pairs: PairSet          # corrupt images dropped, noise applied
    images: np.ndarray      # (n_images, S, S, 3) uint8 read-only np.memmap, aligned with pairs.images
    noise: Noise
    fingerprint: str        # of the clean data (images + captions), before noise
    images_path: str = ""   # the .npy file `images` maps (in the image cache)


def read_and_decode(cfg: DataConfig, cache_dir: str, say: Callable[[float, str], None]) -> tuple:
    """(ps, array, bad) of a data source: webdataset shards are read and decoded in one streaming
    pass; the other sources are read, then their images decoded (both through the image cache).
    array: read-only np.memmap (n_good, S, S, 3) uint8 of the images that decoded, in order."""
    from .sources import load_source, source_kind

    if source_kind(cfg) == "webdataset":
        from .webdataset_stream import cached_webdataset

        say(0.0, "reading and decoding the webdataset shards")
        return cached_webdataset(cfg.path, cfg.image_size, cache_dir, cfg.max_skip_fraction,
                                 lambda f: say(0.95 * f, "reading and decoding the webdataset shards"))
    say(0.0, "reading the data source")
    ps = load_source(cfg)
    say(0.05, f"decoding {ps.n_images} images at {cfg.image_size} px")
    arr, bad = cached_images(ps, cfg.image_size, cache_dir, lambda f: say(0.05 + 0.9 * f, "decoding images"))
    return (ps, arr, bad)


def prepare(cfg: DataConfig, cache_dir: str, progress: Optional[Callable[[float, str], None]] = None,
            noise: Optional[Noise] = None) -> Prepared:
    """The run's data: corrupt images dropped (DataError beyond data.max_skip_fraction), splits
    checked, noise applied (`noise` as recorded, or made from the config). `images` is the image
    cache's read-only memmap, used as it is (never copied)."""
    say = progress or (lambda frac, msg="": None)
    ps, arr, bad = read_and_decode(cfg, cache_dir, say)
    if bad:
        limit = max(1, int(cfg.max_skip_fraction * ps.n_images))
        if len(bad) > limit:
            first = "; ".join(f"{ps.images.key(i)} ({err})" for i, err in bad[:5])
            raise DataError(f"{ps.name}: {len(bad)} of {ps.n_images} images cannot be decoded "
                            f"(more than data.max_skip_fraction={cfg.max_skip_fraction}); first: {first}")
        ps = ps.drop_images(sorted({i for i, _ in bad}), "corrupt image")
    if len(arr) != ps.n_images:
        raise DataError(f"{ps.name}: the image cache {arr.filename} holds {len(arr)} images, expected {ps.n_images}")
    if bad and (ps.n_pairs == 0 or len(ps.pairs_in("train")) == 0):
        raise DataError(f"{ps.name}: no training pairs left after skipping bad items: {ps.skipped}")
    check_run_splits(ps)
    fingerprint = ps.fingerprint()
    if noise is None:
        noise = make_noise(ps, cfg.eta, cfg.noise_seed)
    ps = apply_noise(ps, noise)
    say(1.0, "data ready")
    return Prepared(ps, arr, noise, fingerprint, str(arr.filename))
