"""Readers of image-text datasets on disk into a PairSet (images referenced by path, not decoded).

Formats: a Flickr8k-style folder and a Karpathy JSON (Flickr30K, COCO) with an image root; the
CSV/TSV/JSONL tables are in `tables.py`, webdataset shards in `webdataset.py`; all share `Collector`.

Bad input, the same in every reader (`Collector`):
- the file or its shape is wrong (no such file, no captions file, missing columns, a Karpathy JSON
  of the wrong shape, an unknown split value, one image in two splits): DataError naming the file
  and the line, key or JSON path;
- one row is bad and skipping it loses nothing else: skipped and counted in `PairSet.skipped`
  (first examples in `skipped_examples`): missing image file, empty caption, invalid UTF-8, a
  duplicate row, a malformed line, a JSONL line that is not a JSON object;
- after reading, more than `max_skip_fraction` of the rows skipped (and more than one) is a
  DataError with the counts and the first examples, and so is an empty result.
Rows of images outside every split file (Flickr8k) are counted as "not in a split", not as bad.
A duplicate row repeats the image, the caption and the caption's id where the format has one
(Flickr8k `#k`/caption_index, Karpathy `sentid`): the same text written by two annotators stays.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from array import array
from typing import Iterator, Optional

from ..errors import DataError
from .pairset import FileImages, ImageSource, PairSet

SPLIT_NAMES = {"train": "train", "restval": "train", "dev": "dev", "val": "dev", "valid": "dev",
               "validation": "dev", "test": "test"}
BENIGN_SKIPS = frozenset({"not in a split"})
FLICKR_CAPTION_FILES = ("captions.tsv", "Flickr8k.token.txt")
FLICKR_IMAGE_DIRS = ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset")
FLICKR_SPLIT_FILES = {"train": ("train.txt", "Flickr_8k.trainImages.txt"),
                      "dev": ("dev.txt", "Flickr_8k.devImages.txt"),
                      "test": ("test.txt", "Flickr_8k.testImages.txt")}
_BAD_BYTES = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of invalid UTF-8


def _hash_residue(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode("utf-8", "surrogateescape")).digest()[:8], "big") % 1000


def hash_split(key: str) -> str:
    """A deterministic 90/5/5 % train/dev/test split by name, the same on every machine (a small
    table's empty test or dev split is filled by Collector.finish)."""
    return _split_of(_hash_residue(key))


def _split_of(residue: int) -> str:
    return "train" if residue < 900 else "dev" if residue < 950 else "test"


def normalize_split(value: object, where: str) -> str:
    """train | dev | test from a split value (val, validation -> dev; restval -> train)."""
    s = SPLIT_NAMES.get(value.strip().lower()) if isinstance(value, str) else None
    if s is None:
        raise DataError(f"{where}: unknown split {value!r}; use train, dev (or val), test")
    return s


def has_bad_bytes(text: str) -> bool:
    return bool(_BAD_BYTES.search(text))


def read_text(path: str) -> str:
    """A text file decoded as UTF-8; invalid bytes kept as surrogates so lines can be skipped."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if b"\x00" in data[:8192]:
        raise DataError(f"{path}: not a UTF-8 text file (it holds NUL bytes)")
    return data.decode("utf-8", "surrogateescape").lstrip("\ufeff")


def read_lines(path: str) -> list:
    return [line.rstrip("\r") for line in read_text(path).split("\n")]


class Collector:
    """Gathers pairs for a reader: checks each row, counts skips, builds the PairSet."""

    def __init__(self, name: str, root: Optional[str] = None):
        self.name = name
        self.root = root                   # images are files under it; None: no file check
        # kept small per row: a million rows (web shards) must not cost gigabytes
        self.index: dict = {}              # image name -> image index
        self.names: list = []
        self.splits: list = []
        self.split_where: dict = {}        # image index -> where its split was given (explicit splits only)
        self.captions: list = []
        self.pair_image = array("q")       # int64 image index of each pair
        self.rows = 0
        self.skipped: dict = {}
        self.examples: list = []
        self._seen: set = set()
        self._exists: dict = {}
        self._hashed_train = 0             # images split by hash into train
        self._top_train: list = []         # the 2 of them with the highest (residue, name, index)

    def skip(self, reason: str, where: str, row: bool = True) -> int:
        self.rows += int(row)
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if self.skipped[reason] <= 5:  # the first few of each reason, so none hides another
            self.examples.append({"reason": reason, "where": where})
        return -1

    def exists(self, image: str) -> bool:
        ok = self._exists.get(image)
        if ok is None:
            ok = self._exists[image] = os.path.isfile(os.path.join(self.root, image))
        return ok

    def add(self, image: str, split: Optional[str], caption: str, where: str, caption_id: object = None,
            hash_key: Optional[str] = None) -> int:
        """Add one row; returns the image index, or -1 when the row was skipped (and counted).
        split None: split by a hash of `hash_key` (default: the image name), hash_split."""
        hashed = split is None
        if hashed:
            hash_key = image if hash_key is None else hash_key
            residue = _hash_residue(hash_key)
            split = _split_of(residue)
        if has_bad_bytes(caption) or has_bad_bytes(image):
            return self.skip("invalid UTF-8", where)
        caption = " ".join(caption.split())
        if not caption:
            return self.skip("empty caption", where)
        if self.root is not None and not self.exists(image):
            return self.skip("missing image", f"{where}: {image}")
        key = (image, caption, None if caption_id is None else str(caption_id))
        if key in self._seen:
            return self.skip("duplicate row", where)
        i = self.index.get(image)
        if i is None:
            i = self.index[image] = len(self.names)
            self.names.append(image)
            self.splits.append(split)
            if not hashed:
                self.split_where[i] = where
            elif split == "train":
                self._hashed_train += 1
                self._top_train = sorted(self._top_train + [(residue, image, i)], reverse=True)[:2]
        elif self.splits[i] != split:
            first = self.split_where.get(i, "its first row (split by hash)")
            raise DataError(f"{where}: image {image} is in split {split!r} here but in "
                            f"{self.splits[i]!r} at {first}")
        self._seen.add(key)
        self.rows += 1
        self.captions.append(caption)
        self.pair_image.append(i)
        return i

    def details(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in self.skipped.items())
        bad = [e for e in self.examples if e["reason"] not in BENIGN_SKIPS] or self.examples
        first = "; ".join(f"{e['where']} ({e['reason']})" for e in bad[:3])
        out = f" [{counts}]; first: {first}" if counts else ""
        if "missing image" in self.skipped and self.root is not None:
            out += f"; image files are looked up under {self.root!r} (is the image root right?)"
        return out

    def _fill_hashed_splits(self) -> None:
        """A table split by hash with no test (or dev) image gets one by construction: the train
        image whose hash residue lies nearest the empty split's band moves there (test when there
        are at least 2 images, dev when at least 3), so a small table never has an empty test split."""
        for split, needed in (("test", 2), ("dev", 3)):
            if split in self.splits or len(self.names) < needed or self._hashed_train < 2:
                continue
            _, _, i = self._top_train.pop(0)   # the hashed train image with the highest (residue, name)
            self._hashed_train -= 1
            self.splits[i] = split
            self.split_where[i] = f"its first row (moved to {split}: the hash split left it empty)"

    def finish(self, images: ImageSource, max_skip_fraction: float) -> PairSet:
        if self._top_train:
            self._fill_hashed_splits()
        self.check(max_skip_fraction)
        return PairSet(name=self.name, images=images, image_split=self.splits, captions=self.captions,
                       pair_image=self.pair_image, skipped=dict(self.skipped),
                       skipped_examples=list(self.examples))

    def check(self, max_skip_fraction: float) -> None:
        """DataError when no pair is left, or more than `max_skip_fraction` of the rows (and more than
        one) were skipped for a bad reason."""
        bad = sum(n for reason, n in self.skipped.items() if reason not in BENIGN_SKIPS)
        if not self.captions:
            raise DataError(f"{self.name}: no usable image-caption pairs in {self.rows} rows{self.details()}")
        if bad > max(1, int(max_skip_fraction * self.rows)):
            raise DataError(f"{self.name}: {bad} of {self.rows} rows skipped, more than "
                            f"data.max_skip_fraction={max_skip_fraction:g}{self.details()}")


def _first_existing(folder: str, names: tuple) -> Optional[str]:
    return next((p for p in (os.path.join(folder, n) for n in names) if os.path.exists(p)), None)


# -- Flickr8k-style folder -----------------------------------------------------------------------
def read_flickr_folder(path: str, max_skip_fraction: float = 0.05) -> PairSet:
    """`images/` + `captions.tsv` (or `Flickr8k.token.txt`) + train/dev/test image lists.

    `path` is the folder (or its captions file). Images in no split file are left out.
    """
    if os.path.isfile(path) and os.path.basename(path) in FLICKR_CAPTION_FILES:
        path = os.path.dirname(path) or "."
    if not os.path.isdir(path):
        raise DataError(f"{path}: {'not a folder' if os.path.exists(path) else 'folder not found'}")
    cap_file = _first_existing(path, FLICKR_CAPTION_FILES)
    if cap_file is None:
        raise DataError(f"{path}: no captions file (looked for {', '.join(FLICKR_CAPTION_FILES)})")
    img_dir = _first_existing(path, FLICKR_IMAGE_DIRS)
    if img_dir is None:
        raise DataError(f"{path}: no image folder (looked for {', '.join(FLICKR_IMAGE_DIRS)})")
    c = Collector(f"flickr8k:{path}", img_dir)
    split_of = _flickr_splits(path, c)
    mentioned: set = set()
    for image, caption_id, caption, where in _flickr_captions(cap_file, c):
        mentioned.add(image)
        split = split_of.get(image)
        if split is None:
            c.skip("not in a split", f"{where}: {image}")
        else:
            c.add(image, split[0], caption, where, caption_id)
    for image, (_, where) in split_of.items():
        if image not in mentioned:
            c.skip("image without captions", f"{where}: {image}", row=False)
    return c.finish(FileImages(img_dir, list(c.names)), max_skip_fraction)


def _flickr_splits(folder: str, c: Collector) -> dict:
    """image name -> (split, where it is listed), from the split files that exist."""
    out: dict = {}
    found = []
    for split, candidates in FLICKR_SPLIT_FILES.items():
        f = _first_existing(folder, candidates)
        if f is None:
            continue
        found.append(f)
        fname = os.path.basename(f)
        for n, line in enumerate(read_lines(f), start=1):
            image, where = line.strip(), f"{fname} line {n}"
            if not image:
                continue
            if has_bad_bytes(image):
                c.skip("invalid UTF-8", where, row=False)
                continue
            prev = out.get(image)
            if prev is not None and prev[0] != split:
                raise DataError(f"{where}: image {image} is also listed in {prev[1]}")
            out.setdefault(image, (split, where))
    if not found:
        names = [n for cands in FLICKR_SPLIT_FILES.values() for n in cands]
        raise DataError(f"{folder}: no split files (looked for {', '.join(names)})")
    return out


def _flickr_captions(cap_file: str, c: Collector) -> Iterator[tuple]:
    """(image, caption id, caption, where) for each row of captions.tsv or Flickr8k.token.txt."""
    fname = os.path.basename(cap_file)
    lines = read_lines(cap_file)
    token_format = fname == "Flickr8k.token.txt"
    if token_format:
        cols, start = ["image#k", "caption"], 1
    else:
        cols = [h.strip().lower() for h in lines[0].split("\t")] if lines else []
        if "image" not in cols or "caption" not in cols:
            raise DataError(f"{cap_file}: needs a tab-separated header with columns image and caption "
                            f"(and caption_index); found: {', '.join(cols) or 'nothing'}")
        start = 2
    for n, line in enumerate(lines[start - 1:], start=start):
        if not line.strip():
            continue
        where = f"{fname} line {n}"
        fields = line.split("\t", len(cols) - 1)
        if len(fields) < len(cols):
            c.skip("malformed line", where)
            continue
        if token_format:
            name, hash_mark, k = fields[0].strip().rpartition("#")
            image, caption_id = (name, k) if hash_mark else (k, None)
            caption = fields[1]
        else:
            image, caption = fields[cols.index("image")].strip(), fields[cols.index("caption")]
            caption_id = fields[cols.index("caption_index")].strip() if "caption_index" in cols else None
        yield image, caption_id, caption, where


# -- Karpathy JSON (Flickr30K, COCO) --------------------------------------------------------------
def read_karpathy(json_path: str, image_root: str = "", max_skip_fraction: float = 0.05) -> PairSet:
    """`dataset_*.json` of Karpathy's splits; images at image_root/filepath/filename.

    image_root defaults to the JSON's folder. Splits: val -> dev, restval -> train.
    """
    try:
        with open(json_path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        raise DataError(f"{json_path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{json_path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"{json_path}: cannot read as JSON text ({e})") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        found = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DataError(f'{json_path}: expected an object with an "images" list (Karpathy format); found: {found}')
    root = image_root or os.path.dirname(json_path) or "."
    c = Collector(f"karpathy:{json_path}", root)
    jn = os.path.basename(json_path)
    for i, entry in enumerate(images):
        at = f"{jn} images[{i}]"
        if not isinstance(entry, dict):
            raise DataError(f"{at}: expected an object, got {type(entry).__name__}")
        filename, filepath = entry.get("filename"), entry.get("filepath", "")
        if not isinstance(filename, str) or not filename.strip():
            raise DataError(f"{at}.filename: missing or not a file name")
        if not isinstance(filepath, str):
            raise DataError(f"{at}.filepath: not a folder name: {filepath!r}")
        if "split" not in entry:
            raise DataError(f"{at}.split: missing")
        split = normalize_split(entry["split"], f"{at}.split")
        sentences = entry.get("sentences")
        if not isinstance(sentences, list):
            raise DataError(f"{at}.sentences: missing or not a list")
        image = os.path.normpath(os.path.join(filepath, filename))
        for j, s in enumerate(sentences):
            where = f"{at}.sentences[{j}]"
            if not isinstance(s, dict):
                raise DataError(f"{where}: expected an object, got {type(s).__name__}")
            raw = s.get("raw")
            if raw is None and isinstance(s.get("tokens"), list):
                raw = " ".join(map(str, s["tokens"]))
            if not isinstance(raw, str):
                raise DataError(f'{where}: needs "raw" text or a "tokens" list')
            c.add(image, split, raw, where, s.get("sentid"))
    return c.finish(FileImages(root, list(c.names)), max_skip_fraction)
