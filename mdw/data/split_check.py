"""Which splits a run uses, and a clear stop when one is empty.

A run's experts train on `train` and are evaluated on `test`, as are the evaluate stage's students;
`dev` is used only by `bench sweep` (settings are chosen there, never on test). An empty split used
to surface as `torch.cat(): expected a non-empty list` deep in the experts stage.
"""
from __future__ import annotations

from ..errors import DataError
from .pairset import SPLITS, PairSet

RUN_SPLITS = ("train", "test")

_FIX = {
    "flickr8k": {"train": "list training images in train.txt (or Flickr_8k.trainImages.txt)",
                 "dev": "list images in dev.txt (or Flickr_8k.devImages.txt)",
                 "test": "list test images in test.txt (or Flickr_8k.testImages.txt)"},
    "karpathy": {s: f"give some entries \"split\": \"{'val' if s == 'dev' else s}\"" for s in SPLITS},
    "csv": {s: f"give some rows split={s}, or drop the split column (images are then split 90/5/5 % by a "
               f"hash of their name, test and dev never empty)" for s in SPLITS},
    "webdataset": {s: "add samples (the shards are split 90/5/5 % by a hash of each key)" for s in SPLITS},
    "scenes": {s: f"set data.scenes.n_{s} above 0" for s in SPLITS},
}


def split_fix(source_name: str, split: str) -> str:
    """How to give `split` images, for the source a PairSet's name names ("csv:path", "flickr8k:…")."""
    kind = next((k for k in _FIX if source_name.startswith(k)), "csv")
    return _FIX[kind].get(split, "")


def empty_splits(ps: PairSet, splits=SPLITS) -> list:
    """The splits among `splits` with no pair, in order."""
    counts = ps.counts()
    return [s for s in splits if counts[s]["pairs"] == 0]


def check_run_splits(ps: PairSet, splits=RUN_SPLITS) -> None:
    """Raise DataError naming the split, the source and the fix when a split the run uses is empty."""
    for s in empty_splits(ps, splits):
        use = "the experts train on it" if s == "train" else "the experts and students are evaluated on it"
        raise DataError(f"{ps.name}: the {s} split is empty (0 pairs; {use}); {split_fix(ps.name, s)}")
