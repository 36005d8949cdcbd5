"""PairSet: the one in-memory form of an image-text dataset.

A PairSet holds images (by reference, decoded lazily through an ImageSource), captions, the image
of each caption, the split of each image, and optional ground truth: per-pair `is_noisy` (after
noise injection), per-image object boxes and per-caption words that name those objects (scenes).
A "pair" is one caption with the image it is attached to; an image with five captions gives five
pairs. Noise injection changes `pair_image` and keeps the original in `true_image`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

import numpy as np
from PIL import Image

from .decode import open_image

SPLITS = ("train", "dev", "test")


class ImageSource(Protocol):
    """Where the images of a PairSet come from; index i is image i of the PairSet."""

    def __len__(self) -> int: ...

    def key(self, i: int) -> str:
        """A stable name for image i (a path, a file name, a shard member)."""

    def open(self, i: int, size: int) -> Image.Image:
        """Image i as an RGB PIL image of about `size` px (may be larger), decoded by
        `decode.open_image` (EXIF orientation, every mode to 8-bit RGB); raises on failure."""

    def select(self, keep: Sequence[int]) -> "ImageSource":
        """A source with only the images `keep`, in that order."""

    def identity(self) -> str:
        """A string that changes when the image content may change (for caches)."""


@dataclass
class FileImages:
    """Images stored as files under `root` (names relative to it, or absolute paths)."""

    root: str
    names: list

    def __len__(self):
        return len(self.names)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.names[i])

    def key(self, i: int) -> str:
        return self.names[i]

    def open(self, i: int, size: int) -> Image.Image:
        return open_image(self.path(i), size)

    def select(self, keep):
        return FileImages(self.root, [self.names[k] for k in keep])

    def identity(self) -> str:
        """The folder, every name and size, and the content of the first files: a copy made again
        (new modification times, same bytes) keeps its identity; files replaced under the same
        names almost always change a size, and the first ones are checked byte for byte."""
        h = hashlib.sha1(os.path.abspath(self.root).encode())
        for i, n in enumerate(self.names):
            h.update(n.encode())
            try:
                if i < 64:
                    with open(self.path(i), "rb") as f:
                        h.update(hashlib.sha1(f.read()).digest())
                else:
                    h.update(str(os.path.getsize(self.path(i))).encode())
            except OSError:
                pass
        return h.hexdigest()


@dataclass
class BytesImages:
    """Encoded images held in memory (e.g. read from webdataset shards)."""

    names: list
    blobs: list

    def __len__(self):
        return len(self.names)

    def key(self, i: int) -> str:
        return self.names[i]

    def open(self, i: int, size: int) -> Image.Image:
        return open_image(self.blobs[i], size)

    def select(self, keep):
        return BytesImages([self.names[k] for k in keep], [self.blobs[k] for k in keep])

    def identity(self) -> str:
        h = hashlib.sha1()
        for n, b in zip(self.names, self.blobs):
            h.update(n.encode())
            h.update(hashlib.sha1(b).digest())
        return h.hexdigest()


@dataclass
class PairSet:
    name: str                         # what it was read from, for people
    images: ImageSource
    image_split: np.ndarray           # (n_images,) str: train | dev | test
    captions: list                    # (n_pairs,) str
    pair_image: np.ndarray            # (n_pairs,) int: image shown with each caption (after noise)
    true_image: Optional[np.ndarray] = None   # (n_pairs,) int: the caption's own image, when known
    is_noisy: Optional[np.ndarray] = None     # (n_pairs,) bool, when known
    boxes: Optional[list] = None      # per image: [{"shape","colour","size","box":[x0,y0,x1,y1]}] in [0,1]
    word_objects: Optional[list] = None  # per caption: [{"pos","word","object","type"}]
    skipped: dict = field(default_factory=dict)        # reason -> count
    skipped_examples: list = field(default_factory=list)  # [{"reason","where"}], the first few

    def __post_init__(self):
        self.image_split = np.asarray(self.image_split, dtype=object)
        self.pair_image = np.asarray(self.pair_image, dtype=np.int64)
        if self.true_image is None:
            self.true_image = self.pair_image.copy()
        if len(self.captions) != len(self.pair_image):
            raise ValueError("captions and pair_image differ in length")
        if len(self.image_split) != len(self.images):
            raise ValueError("image_split and images differ in length")

    # -- sizes and splits ---------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def n_pairs(self) -> int:
        return len(self.captions)

    def pair_split(self) -> np.ndarray:
        """Split of each pair: the split of the caption's own image."""
        return self.image_split[self.true_image]

    def pairs_in(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.pair_split() == split)

    def images_in(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.image_split == split)

    def counts(self) -> dict:
        ps = self.pair_split()
        return {s: {"images": int((self.image_split == s).sum()), "pairs": int((ps == s).sum())}
                for s in SPLITS}

    def fingerprint(self) -> str:
        """Identity of the images and captions (not of the noise): keys caches."""
        h = hashlib.sha1(self.images.identity().encode())
        for c, i in zip(self.captions, self.true_image):
            h.update(f"{int(i)}\t{c}\n".encode())
        return h.hexdigest()[:16]

    def text_fingerprint(self) -> str:
        h = hashlib.sha1()
        for c in self.captions:
            h.update(c.encode() + b"\n")
        return h.hexdigest()[:16]

    # -- edits --------------------------------------------------------------------------
    def note_skip(self, reason: str, where: str, count: int = 1, keep_examples: int = 20):
        self.skipped[reason] = self.skipped.get(reason, 0) + count
        if len(self.skipped_examples) < keep_examples:
            self.skipped_examples.append({"reason": reason, "where": where})

    def drop_images(self, bad: Sequence[int], reason: str) -> "PairSet":
        """A PairSet without images `bad` and their captions; the drop is counted as skipped."""
        bad = set(int(b) for b in bad)
        if not bad:
            return self
        keep = [i for i in range(self.n_images) if i not in bad]
        remap = np.full(self.n_images, -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        keep_pairs = np.flatnonzero(remap[self.true_image] >= 0)
        out = PairSet(
            name=self.name,
            images=self.images.select(keep),
            image_split=self.image_split[keep],
            captions=[self.captions[p] for p in keep_pairs],
            pair_image=remap[self.pair_image[keep_pairs]],
            true_image=remap[self.true_image[keep_pairs]],
            is_noisy=None if self.is_noisy is None else self.is_noisy[keep_pairs],
            boxes=None if self.boxes is None else [self.boxes[i] for i in keep],
            word_objects=None if self.word_objects is None else [self.word_objects[p] for p in keep_pairs],
            skipped=dict(self.skipped),
            skipped_examples=list(self.skipped_examples),
        )
        if (out.pair_image < 0).any():
            raise ValueError("drop_images after noise injection would orphan pairs; drop images first")
        for b in sorted(bad):
            out.note_skip(reason, self.images.key(b))
        return out

    def summary(self, n_examples: int = 3, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        pick = rng.choice(self.n_pairs, size=min(n_examples, self.n_pairs), replace=False) if self.n_pairs else []
        out = {
            "name": self.name,
            "images": self.n_images,
            "pairs": self.n_pairs,
            "splits": self.counts(),
            "sample_captions": [{"image": self.images.key(int(self.pair_image[p])),
                                 "caption": self.captions[int(p)]} for p in pick],
            "skipped": dict(self.skipped),
            "skipped_examples": list(self.skipped_examples),
            "has_boxes": self.boxes is not None,
        }
        if self.is_noisy is not None:
            out["noisy_pairs"] = int(self.is_noisy.sum())
        return out
