"""Partially mismatched pairs (METHOD §1): derange the images of ⌊η·N⌋ training pairs.

The picked pairs' images are permuted among themselves so that no picked pair keeps an image
showing its own caption's image (a derangement with respect to image identity, which matters when
several captions share one image). Reproducible by seed; the permutation is kept.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from .pairset import PairSet


@dataclass
class Noise:
    eta: float
    seed: int
    pairs: np.ndarray      # (K,) indices of the picked pairs, ascending
    images: np.ndarray     # (K,) the image each picked pair shows after injection

    def to_dict(self) -> dict:
        return {"eta": self.eta, "seed": self.seed, "count": int(len(self.pairs)),
                "pairs": self.pairs.tolist(), "images": self.images.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Noise":
        return cls(float(d["eta"]), int(d["seed"]), np.asarray(d["pairs"], dtype=np.int64),
                   np.asarray(d["images"], dtype=np.int64))


def _derangement(owner: np.ndarray, rng: np.random.Generator, max_rounds: int = 1000) -> np.ndarray:
    """A permutation `perm` of range(K) with owner[perm[k]] != owner[k] for every k."""
    k = len(owner)
    _, counts = np.unique(owner, return_counts=True)
    if k < 2 or counts.max() * 2 > k:
        raise DataError(f"noise: cannot derange {k} picked pairs so that none keeps its image "
                        f"(largest group sharing one image: {counts.max()}); use a larger eta or more data")
    perm = rng.permutation(k)
    for _ in range(max_rounds):
        bad = np.flatnonzero(owner[perm] == owner)
        if bad.size == 0:
            return perm
        for a in bad:
            b = int(rng.integers(k))
            if owner[perm[b]] != owner[a] and owner[perm[a]] != owner[b]:
                perm[a], perm[b] = perm[b], perm[a]
    raise DataError("noise: failed to find a derangement (too many captions share an image)")


def make_noise(ps: PairSet, eta: float, seed: int) -> Noise:
    """Pick ⌊η·N⌋ of the N training pairs and derange their images."""
    if not (0.0 <= eta < 1.0):
        raise ConfigError(f"data.eta: noise ratio must be in [0, 1), got {eta!r}")
    train = ps.pairs_in("train")
    count = int(np.floor(eta * len(train)))
    rng = np.random.default_rng(seed)
    if count == 0:
        return Noise(eta, seed, np.zeros(0, np.int64), np.zeros(0, np.int64))
    picked = np.sort(rng.choice(train, size=count, replace=False))
    owner = ps.true_image[picked]
    perm = _derangement(owner, rng)
    return Noise(eta, seed, picked, owner[perm])


def apply_noise(ps: PairSet, noise: Noise) -> PairSet:
    """A PairSet whose picked pairs show their new images, with `is_noisy` ground truth."""
    pair_image = ps.true_image.copy()
    if len(noise.pairs) and (noise.pairs.max() >= ps.n_pairs or noise.images.max() >= ps.n_images):
        raise DataError("noise: the recorded permutation does not fit this dataset (was it changed?)")
    pair_image[noise.pairs] = noise.images
    is_noisy = pair_image != ps.true_image
    return dataclasses.replace(ps, pair_image=pair_image, true_image=ps.true_image.copy(), is_noisy=is_noisy)


def inject_noise(ps: PairSet, eta: float, seed: int) -> tuple:
    """(noisy PairSet, Noise record)."""
    noise = make_noise(ps, eta, seed)
    return apply_noise(ps, noise), noise
