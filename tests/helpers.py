"""Small real datasets made inside tests."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from mdw.data.pairset import BytesImages, PairSet


def png_bytes(seed: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def tiny_pairset(n_images: int = 40, captions_per_image: int = 3, splits=(0.7, 0.15, 0.15), seed: int = 0) -> PairSet:
    """n_images random-noise PNGs held in memory, each with `captions_per_image` captions."""
    names = [f"img{i:04d}.png" for i in range(n_images)]
    blobs = [png_bytes(seed * 100003 + i) for i in range(n_images)]
    n_tr = int(splits[0] * n_images)
    n_dev = int(splits[1] * n_images)
    split = ["train"] * n_tr + ["dev"] * n_dev + ["test"] * (n_images - n_tr - n_dev)
    captions, owner = [], []
    for i in range(n_images):
        for k in range(captions_per_image):
            captions.append(f"caption {k} of image {i}")
            owner.append(i)
    return PairSet(name="tiny", images=BytesImages(names, blobs), image_split=np.array(split, dtype=object),
                   captions=captions, pair_image=np.array(owner))
