"""The built-in `scenes` data source: procedurally drawn coloured shapes with captions.

`make_scenes(cfg)` gives a PairSet whose images are `ScenesImages` (object specs rendered on
demand, see scenes_draw.py) and whose ground truth holds every object's box and, per caption,
the words that name each object. Everything is deterministic for `cfg.seed`; the images of one
split do not depend on the sizes of the other splits.
"""
from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..config import ScenesConfig
from ..errors import ConfigError
from .pairset import SPLITS, PairSet
from .scenes_draw import (COLOURS, RENDER_VERSION, SHAPES, SIZE_EXTENT, SIZES, TEXTURES,
                          Background, Scene, SceneObject, half_extents, render_scene)

SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
TEXTURE_WORDS = {"striped": "striped", "checked": "checkered"}
SINGLE_FRACTION = 0.25  # share of one-object scenes when 1 is among several allowed counts
MARGIN = 0.03           # min distance of a box from the image border and from other boxes

# Slots: {aK}/{theK}/{bareK} name the K-th object of the caption's order (article + optional
# size + colour + shape); {rel} relates object 0 to object 1; {bg} a background; {region} where
# object 0 is. Object words never carry punctuation, so caption.split() finds them as written.
TEMPLATES = {
    1: ["{a0}", "{a0} on {bg}", "a picture of {a0}", "{a0} {region}", "a single {bare0}",
        "one shape: {a0}", "there is {a0} {region}", "{a0} {region} on {bg}",
        "an image with {a0}", "only {a0} on {bg}"],
    2: ["{a0} and {a1}", "{a0} {rel} {a1}", "{the0} is {rel} {the1}", "two shapes: {a0} and {a1}",
        "{a0} with {a1} on {bg}", "a picture of {a0} {rel} {a1}", "{a0} and {a1} on {bg}",
        "two shapes: {a0} {rel} {a1}"],
    3: ["three shapes: {a0} with {a1} and {a2}", "{a0} {rel} {a1} and {a2}",
        "{a0} along with {a1} and {a2}", "a picture of {a0} with {a1} and {a2}",
        "three shapes: {a0} {rel} {a1} and {a2}", "{a0} and {a1} and {a2} on {bg}",
        "{the0} is {rel} {the1}", "{a0} {rel} {a1}"],
}

Token = tuple[str, Optional[int], Optional[str]]  # word, object index, word type


# -- the image source ---------------------------------------------------------------------------
@dataclass
class ScenesImages:
    """ImageSource over scene specs; each image is rendered when opened, at the size asked."""

    scenes: list
    names: list

    def __len__(self) -> int:
        return len(self.scenes)

    def key(self, i: int) -> str:
        return self.names[i]

    def open(self, i: int, size: int) -> Image.Image:
        return render_scene(self.scenes[i], size)

    def select(self, keep: Sequence[int]) -> "ScenesImages":
        return ScenesImages([self.scenes[k] for k in keep], [self.names[k] for k in keep])

    def identity(self) -> str:
        h = hashlib.sha1(RENDER_VERSION.encode())
        for n, s in zip(self.names, self.scenes):
            h.update(f"{n}:{s!r}\n".encode())
        return h.hexdigest()


# -- sampling scenes ----------------------------------------------------------------------------
def _muted(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.06, 0.28), rng.uniform(0.16, 0.40))
    return (int(r * 255), int(g * 255), int(b * 255))


def _sample_background(rng: np.random.Generator) -> Background:
    texture = str(rng.choice(TEXTURES))
    amp = {"plain": 0.0, "striped": rng.uniform(6, 12), "checked": rng.uniform(5, 10)}[texture]
    return Background(c0=_muted(rng), c1=_muted(rng), angle=float(rng.uniform(0, 2 * np.pi)),
                      texture=texture, freq=float(rng.uniform(3, 9)),
                      tex_angle=float(rng.uniform(0, np.pi)), tex_amp=float(amp),
                      noise_seed=int(rng.integers(2**31)), noise_amp=float(rng.uniform(3, 7)))


def _n_objects(rng: np.random.Generator, lo: int, hi: int) -> int:
    counts = np.arange(lo, hi + 1)
    w = np.ones(len(counts))
    if lo == 1 and len(counts) > 1:
        w[0] = SINGLE_FRACTION * (len(counts) - 1) / (1 - SINGLE_FRACTION)
    return int(rng.choice(counts, p=w / w.sum()))


def _disjoint(a: tuple, b: tuple) -> bool:
    return (a[2] + MARGIN <= b[0] or b[2] + MARGIN <= a[0] or
            a[3] + MARGIN <= b[1] or b[3] + MARGIN <= a[1])


def _sample_objects(rng: np.random.Generator, n: int) -> tuple[SceneObject, ...]:
    """n objects with distinct (colour, shape), boxes apart from each other and from the border."""
    names = list(COLOURS)
    while True:
        kinds = rng.choice(len(SHAPES) * len(names), size=n, replace=False)
        objs: list[SceneObject] = []
        for kind in kinds:
            shape, colour = SHAPES[kind % len(SHAPES)], names[kind // len(SHAPES)]
            size = str(rng.choice(SIZES))
            extent = float(rng.uniform(*SIZE_EXTENT[size]))
            hw, hh = (e * extent / 2 for e in half_extents(shape))
            shade = rng.integers(-10, 11)  # mostly brightness, so white stays neutral
            rgb = tuple(int(np.clip(c + shade + rng.integers(-3, 4), 0, 255))
                        for c in COLOURS[colour])
            for _ in range(60):
                o = SceneObject(shape, colour, size,
                                float(rng.uniform(MARGIN + hw, 1 - MARGIN - hw)),
                                float(rng.uniform(MARGIN + hh, 1 - MARGIN - hh)), extent, rgb)
                if all(_disjoint(o.box(), p.box()) for p in objs):
                    objs.append(o)
                    break
        if len(objs) == n:
            return tuple(objs)


# -- captions -----------------------------------------------------------------------------------
def _relation_phrases(a: SceneObject, b: SceneObject) -> list[str]:
    """What is true of a relative to b, from box centres along the dominant axis."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dy) >= abs(dx):
        return ["above"] if dy < 0 else ["below"]
    side = "left" if dx < 0 else "right"
    return [f"{side} of", f"to the {side} of", "next to"]


def _region(o: SceneObject) -> str:
    h = "left" if o.cx < 0.4 else "right" if o.cx > 0.6 else ""
    v = "top" if o.cy < 0.4 else "bottom" if o.cy > 0.6 else ""
    if h and v:
        return f"in the {v} {h} corner"
    if v:
        return f"at the {v}"
    return f"on the {h}" if h else "in the centre"


def _phrase(rng: np.random.Generator, k: int, o: SceneObject, det: str) -> list[Token]:
    words: list[Token] = []
    if rng.random() < 0.4:
        words.append((str(rng.choice(SIZE_WORDS[o.size])), k, "size"))
    words += [(o.colour, k, "colour"), (o.shape, k, "shape")]
    if det == "a":
        det = "an" if words[0][0][0] in "aeiou" else "a"
    return ([(det, None, None)] if det != "bare" else []) + words


def _fill(rng: np.random.Generator, scene: Scene, template: str) -> list[Token]:
    objs = scene.objects
    order = [int(k) for k in rng.permutation(len(objs))]
    toks: list[Token] = []
    for w in template.split():
        if not (w.startswith("{") and w.endswith("}")):
            toks.append((w, None, None))
            continue
        slot = w[1:-1]
        if slot == "rel":
            text = str(rng.choice(_relation_phrases(objs[order[0]], objs[order[1]])))
        elif slot == "region":
            text = _region(objs[order[0]])
        elif slot == "bg":
            tex = scene.background.texture
            word = TEXTURE_WORDS[tex] + " " if tex in TEXTURE_WORDS and rng.random() < 0.6 else ""
            text = f"a dark {word}background"
        else:
            det = slot.rstrip("0123456789")
            k = order[int(slot[len(det):])]
            toks += _phrase(rng, k, objs[k], det)
            continue
        toks += [(t, None, None) for t in text.split()]
    return toks


def _captions(rng: np.random.Generator, scene: Scene, n: int) -> list[list[Token]]:
    """n captions, distinct where the templates allow it."""
    templates = TEMPLATES[len(scene.objects)]
    out: list[list[Token]] = []
    seen: set[str] = set()
    for attempt in range(40 * n):
        toks = _fill(rng, scene, templates[int(rng.integers(len(templates)))])
        text = " ".join(t[0] for t in toks)
        if text not in seen or attempt >= 30 * n:
            seen.add(text)
            out.append(toks)
        if len(out) == n:
            break
    return out


# -- the data source ----------------------------------------------------------------------------
def _check(cfg: ScenesConfig) -> None:
    for k in ("n_train", "n_dev", "n_test"):
        if getattr(cfg, k) < 0:
            raise ConfigError(f"data.scenes.{k}: must be >= 0, got {getattr(cfg, k)}")
    if not (1 <= cfg.min_objects <= cfg.max_objects <= 3):
        raise ConfigError("data.scenes: need 1 <= min_objects <= max_objects <= 3")
    if not (1 <= cfg.min_captions <= cfg.max_captions):
        raise ConfigError("data.scenes: need 1 <= min_captions <= max_captions")


def make_scenes(cfg: ScenesConfig) -> PairSet:
    """The scenes PairSet for cfg: images, 3-5 captions each, boxes and word-object links."""
    _check(cfg)
    scenes, names, split_of = [], [], []
    captions, pair_image, boxes, word_objects = [], [], [], []
    for s, (split, count) in enumerate(zip(SPLITS, (cfg.n_train, cfg.n_dev, cfg.n_test))):
        for j in range(count):
            rng = np.random.default_rng([cfg.seed, s, j])
            scene = Scene(_sample_objects(rng, _n_objects(rng, cfg.min_objects, cfg.max_objects)),
                          _sample_background(rng))
            i = len(scenes)
            scenes.append(scene)
            names.append(f"{split}_{j:05d}")
            split_of.append(split)
            boxes.append([{"shape": o.shape, "colour": o.colour, "size": o.size,
                           "box": [round(v, 5) for v in o.box()]} for o in scene.objects])
            n_caps = int(rng.integers(cfg.min_captions, cfg.max_captions + 1))
            for toks in _captions(rng, scene, n_caps):
                captions.append(" ".join(t[0] for t in toks))
                pair_image.append(i)
                word_objects.append([{"pos": p, "word": w, "object": k, "type": t}
                                     for p, (w, k, t) in enumerate(toks) if k is not None])
    return PairSet(
        name=f"scenes(seed={cfg.seed}, {cfg.n_train}/{cfg.n_dev}/{cfg.n_test})",
        images=ScenesImages(scenes, names),
        image_split=np.asarray(split_of, dtype=object),
        captions=captions,
        pair_image=np.asarray(pair_image, dtype=np.int64),
        boxes=boxes,
        word_objects=word_objects,
    )
