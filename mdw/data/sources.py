"""A DataConfig → PairSet: dispatch to the reader of each source kind, or detect the kind.

Kinds (config.SOURCES): scenes (built in), flickr8k (folder), karpathy (JSON + image root),
csv, jsonl (tables), webdataset (tar shards). "auto" detects the kind from `path`.
"""
from __future__ import annotations

import glob
import os

from ..config import SOURCES, DataConfig
from ..errors import ConfigError, DataError
from .pairset import PairSet
from .readers import FLICKR_CAPTION_FILES, read_flickr_folder, read_karpathy
from .tables import read_table
from .webdataset import SHARD_PATTERNS, read_webdataset

LOOKED_FOR = ("a folder with captions.tsv or Flickr8k.token.txt (flickr8k), a folder of .tar shards "
              '(webdataset), a .json with an "images" list (karpathy), a .csv or .tsv (csv), '
              "a .jsonl (jsonl), a .tar file or a glob of shards (webdataset)")


def load_source(cfg: DataConfig) -> PairSet:
    """Read the data source a DataConfig names (the images are referenced, not decoded; for
    webdataset shards only captions and keys are read, see `webdataset.read_webdataset`: a run's
    data stage streams and decodes shards in one pass instead, `prepare.read_and_decode`)."""
    kind = cfg.source
    if kind == "scenes":
        from .scenes import make_scenes  # written alongside; imported only when asked for

        return make_scenes(cfg.scenes)
    kind = source_kind(cfg)
    frac = cfg.max_skip_fraction
    if kind == "flickr8k":
        return read_flickr_folder(cfg.path, frac)
    if kind == "karpathy":
        return read_karpathy(cfg.path, cfg.image_root, frac)
    if kind in ("csv", "jsonl"):
        return read_table(cfg.path, cfg.image_root, frac, fmt=kind)
    return read_webdataset(cfg.path, frac)


def source_kind(cfg: DataConfig) -> str:
    """The source kind of a DataConfig, "auto" resolved from its path. ConfigError for an unknown
    kind or a missing path; DataError when "auto" cannot tell."""
    kind = cfg.source
    if kind == "scenes":
        return kind
    if kind not in SOURCES + ("auto",):
        raise ConfigError(f"data.source: unknown source {kind!r}; known: {', '.join(SOURCES)}, auto")
    if not cfg.path:
        raise ConfigError(f"data.path: source {kind!r} needs a path")
    return detect_source(cfg.path) if kind == "auto" else kind


def detect_source(path: str) -> str:
    """The source kind of a path, from its layout and extension; DataError when none fits."""
    low = path.lower()
    if os.path.isdir(path):
        if any(os.path.exists(os.path.join(path, n)) for n in FLICKR_CAPTION_FILES):
            return "flickr8k"
        if any(glob.glob(os.path.join(path, pat)) for pat in SHARD_PATTERNS):
            return "webdataset"
        raise DataError(f"{path}: cannot tell what data this folder holds; looked for {LOOKED_FOR}")
    if not os.path.exists(path):
        if glob.has_magic(path):
            if glob.glob(path):
                return "webdataset"
            raise DataError(f"{path}: no files match this pattern")
        raise DataError(f"{path}: not found")
    if os.path.basename(path) in FLICKR_CAPTION_FILES:
        return "flickr8k"
    if low.endswith(".json"):
        if _has_images_list(path):
            return "karpathy"
        raise DataError(f'{path}: a .json source must be a Karpathy-style object with an "images" list '
                        "(for a table of image/caption records use .jsonl, one object a line)")
    if low.endswith((".csv", ".tsv")):
        return "csv"
    if low.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if low.endswith((".tar", ".tar.gz", ".tgz")):
        return "webdataset"
    raise DataError(f"{path}: cannot tell the format from its name; looked for {LOOKED_FOR}")


def _has_images_list(path: str) -> bool:
    """Whether a JSON file looks like a Karpathy dataset: an "images" key near its start."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return head.lstrip().startswith(b"{") and b'"images"' in head


def describe_source(spec: str, image_root: str = "") -> DataConfig:
    """A DataConfig from a CLI SOURCE string: "scenes", a path (kind detected), or KIND:PATH."""
    spec = spec.strip()
    if spec == "scenes":
        return DataConfig(source="scenes")
    kind, sep, rest = spec.partition(":")
    if sep and kind in SOURCES and kind != "scenes" and rest:
        return DataConfig(source=kind, path=rest, image_root=image_root)
    return DataConfig(source="auto", path=spec, image_root=image_root)
