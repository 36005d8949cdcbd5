"""The built-in scenes source: determinism, counts, ground truth (boxes, word-object links,
relations), rendering (pixels inside boxes, muted backgrounds, size consistency) and select()."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mdw.config import ScenesConfig
from mdw.data.scenes import SIZE_WORDS, make_scenes
from mdw.data.scenes_draw import COLOURS, SHAPES, render_background
from mdw.errors import ConfigError

CFG = ScenesConfig(n_train=60, n_dev=10, n_test=20, seed=3)
PALETTE = np.asarray(list(COLOURS.values()), dtype=np.float32)


@pytest.fixture(scope="module")
def ps():
    return make_scenes(CFG)


def _pixels(ps, i: int, size: int) -> np.ndarray:
    return np.asarray(ps.images.open(i, size), dtype=np.float32)


def _caps_of(ps, i: int) -> list[int]:
    return [int(p) for p in np.flatnonzero(ps.pair_image == i)]


def _centre(box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def test_deterministic_for_seed(ps):
    again = make_scenes(CFG)
    assert again.captions == ps.captions and again.boxes == ps.boxes
    assert again.word_objects == ps.word_objects
    assert again.images.identity() == ps.images.identity()
    for i in (0, 7, 65, 89):
        assert ps.images.open(i, 64).tobytes() == again.images.open(i, 64).tobytes()
    other = make_scenes(ScenesConfig(n_train=60, n_dev=10, n_test=20, seed=4))
    assert other.captions != ps.captions
    assert other.images.identity() != ps.images.identity()
    assert other.images.open(0, 64).tobytes() != ps.images.open(0, 64).tobytes()


def test_split_sizes_do_not_change_other_splits(ps):
    bigger = make_scenes(ScenesConfig(n_train=75, n_dev=10, n_test=20, seed=3))
    for split in ("dev", "test"):
        a, b = ps.images_in(split), bigger.images_in(split)
        assert [ps.boxes[i] for i in a] == [bigger.boxes[i] for i in b]


def test_counts_and_metadata(ps):
    assert ps.name == "scenes(seed=3, 60/10/20)"
    counts = ps.counts()
    assert [counts[s]["images"] for s in ("train", "dev", "test")] == [60, 10, 20]
    assert (ps.true_image == ps.pair_image).all() and ps.is_noisy is None
    for i in range(ps.n_images):
        caps = _caps_of(ps, i)
        assert CFG.min_captions <= len(caps) <= CFG.max_captions
        assert len(set(ps.captions[p] for p in caps)) == len(caps), "captions of one image repeat"
        assert CFG.min_objects <= len(ps.boxes[i]) <= CFG.max_objects
        kinds = [(b["shape"], b["colour"]) for b in ps.boxes[i]]
        assert len(set(kinds)) == len(kinds), "two objects of one colour and shape"
    for c in ps.captions:
        assert c == c.lower() and c.strip() == c


def test_config_bounds_respected():
    cfg = ScenesConfig(n_train=40, n_dev=0, n_test=0, seed=1, min_objects=2, max_objects=2,
                       min_captions=1, max_captions=2)
    s = make_scenes(cfg)
    assert all(len(b) == 2 for b in s.boxes)
    per_image = np.bincount(s.pair_image, minlength=s.n_images)
    assert per_image.min() >= 1 and per_image.max() <= 2
    with pytest.raises(ConfigError):
        make_scenes(ScenesConfig(min_objects=0))
    with pytest.raises(ConfigError):
        make_scenes(ScenesConfig(min_captions=4, max_captions=3))


def test_single_object_scenes_are_a_minority():
    s = make_scenes(ScenesConfig(n_train=400, n_dev=0, n_test=0, seed=5))
    n = np.asarray([len(b) for b in s.boxes])
    assert 0.17 < (n == 1).mean() < 0.33 and (n == 3).mean() > 0.25


def test_word_objects_match_captions_and_boxes(ps):
    names = set(SHAPES) | set(COLOURS)
    for p, (cap, links) in enumerate(zip(ps.captions, ps.word_objects)):
        words = cap.split()
        objs = ps.boxes[int(ps.pair_image[p])]
        named: dict[int, set] = {}
        for w in links:
            assert words[w["pos"]] == w["word"]
            o = objs[w["object"]]
            if w["type"] == "size":
                assert w["word"] in SIZE_WORDS[o["size"]]
            else:
                assert w["type"] in ("shape", "colour") and w["word"] == o[w["type"]]
            named.setdefault(w["object"], set()).add(w["type"])
        assert all({"shape", "colour"} <= t for t in named.values()), cap
        assert len(named) >= min(2, len(objs)), cap
        linked = {w["pos"] for w in links}
        assert not [k for k, w in enumerate(words) if w in names and k not in linked], cap


def _relations(words: list[str]) -> list[tuple[int, str]]:
    out = []
    for k, w in enumerate(words):
        nxt = words[k + 1] if k + 1 < len(words) else ""
        if w in ("above", "below"):
            out.append((k, w))
        elif (w in ("left", "right") and nxt == "of") or (w == "next" and nxt == "to"):
            out.append((k, w))
    return out


def test_relations_true_of_box_centres(ps):
    seen = set()
    for p, cap in enumerate(ps.captions):
        words = cap.split()
        shape_at = {w["pos"]: w["object"] for w in ps.word_objects[p] if w["type"] == "shape"}
        objs = ps.boxes[int(ps.pair_image[p])]
        for k, rel in _relations(words):
            a = objs[shape_at[max(q for q in shape_at if q < k)]]
            b = objs[shape_at[min(q for q in shape_at if q > k)]]
            (ax, ay), (bx, by) = _centre(a["box"]), _centre(b["box"])
            ok = {"above": ay < by, "below": ay > by, "left": ax < bx, "right": ax > bx,
                  "next": abs(ax - bx) > abs(ay - by)}[rel]
            assert ok, (cap, a, b)
            seen.add(rel)
    assert seen == {"above", "below", "left", "right", "next"}


def test_count_and_region_words(ps):
    for p, cap in enumerate(ps.captions):
        objs = ps.boxes[int(ps.pair_image[p])]
        for n, word in ((1, "one"), (2, "two"), (3, "three")):
            if cap.startswith(f"{word} shape"):
                assert len(objs) == n, cap
        if len(objs) == 1:
            x, y = _centre(objs[0]["box"])
            if " top" in cap:
                assert y < 0.4, cap
            if " bottom" in cap:
                assert y > 0.6, cap
            if " left" in cap:
                assert x < 0.4, cap
            if " right" in cap:
                assert x > 0.6, cap


def test_boxes_in_range_and_big_enough(ps):
    for objs in ps.boxes:
        for o in objs:
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            assert max(x1 - x0, y1 - y0) * 64 >= 10  # readable at 64 px
            assert o["shape"] in SHAPES and o["colour"] in COLOURS and o["size"] in SIZE_WORDS


def _near(pix: np.ndarray, rgb, tol: float = 60.0) -> np.ndarray:
    return np.linalg.norm(pix - np.asarray(rgb, dtype=np.float32), axis=-1) < tol


def test_object_pixels_inside_boxes(ps):
    size = 64
    for i in range(0, ps.n_images, 3):
        pix = _pixels(ps, i, size)
        outside = np.ones((size, size), dtype=bool)
        for o in ps.boxes[i]:
            x0, y0, x1, y1 = (int(round(v * size)) for v in o["box"])
            outside[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = False
            inside = _near(pix[y0:y1, x0:x1], COLOURS[o["colour"]])
            assert inside.mean() > 0.25, (i, o)
        any_colour = np.zeros((size, size), dtype=bool)
        for rgb in COLOURS.values():
            any_colour |= _near(pix, rgb)
        assert not (any_colour & outside).any(), i


def test_boxes_are_tight(ps):
    size, tol = 128, 2.0
    for i in range(0, ps.n_images, 4):
        pix = _pixels(ps, i, size)
        for o in ps.boxes[i]:
            b = np.asarray(o["box"]) * size
            x0, y0 = (int(max(v - 3, 0)) for v in b[:2])
            x1, y1 = (int(min(v + 3, size)) for v in b[2:])
            ys, xs = np.nonzero(_near(pix[y0:y1, x0:x1], COLOURS[o["colour"]]))
            got = np.asarray([xs.min() + x0, ys.min() + y0, xs.max() + x0 + 1, ys.max() + y0 + 1])
            assert np.abs(got - b).max() < tol, (i, o, got)


def test_backgrounds_are_muted(ps):
    bg = np.stack([render_background(s.background, 16) for s in ps.images.scenes]).reshape(-1, 3)
    dist = np.linalg.norm(bg[:, None, :] - PALETTE[None], axis=-1)
    assert dist.min() > 80
    assert bg.max() < 170


def test_sizes_render_the_same_scene(ps):
    for i in (0, 11, 70):
        small = ps.images.open(i, 64)
        big = ps.images.open(i, 128)
        assert small.mode == "RGB" and small.size == (64, 64) and big.size == (128, 128)
        down = np.asarray(big.resize((64, 64), Image.BOX), dtype=np.float32)
        diff = np.abs(down - np.asarray(small, dtype=np.float32))
        assert diff.mean() < 2.0 and np.percentile(diff, 99) < 20, i


def test_select_keeps_the_right_scenes(ps):
    keep = [5, 2, 70]
    sub = ps.images.select(keep)
    assert len(sub) == 3 and [sub.key(k) for k in range(3)] == [ps.images.key(k) for k in keep]
    for k, i in enumerate(keep):
        assert sub.open(k, 32).tobytes() == ps.images.open(i, 32).tobytes()
    assert sub.identity() != ps.images.identity()
    assert ps.images.key(0) == "train_00000" and ps.images.key(60) == "dev_00000"
    dropped = ps.drop_images([1, 3], "test")
    assert dropped.n_images == ps.n_images - 2 and dropped.boxes[1] == ps.boxes[2]
    assert dropped.images.key(1) == ps.images.key(2)
