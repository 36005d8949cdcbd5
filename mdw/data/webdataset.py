"""Webdataset tar shards (as written by img2dataset) into a PairSet with in-memory image bytes.

A sample is the group of members sharing a key (the member name up to the first dot of its base
name): `00000001.jpg` + `00000001.txt` [+ `00000001.json`]. The caption is the `.txt`, or else the
`caption`/`text` field of the `.json`. Shards are read in sorted order; images are split 90/5/5 %
by a hash of the key, like a table without a split column. Encoded images stay in memory
(`BytesImages`), so this suits shard sets that fit in RAM; they are decoded later, where corrupt
ones are skipped and counted. Bad samples (no image, no caption, empty caption, invalid UTF-8,
duplicates) are skipped and counted; a file that is not a tar archive is a DataError.
"""
from __future__ import annotations

import glob
import json
import os
import tarfile

from ..errors import DataError
from .pairset import BytesImages, PairSet
from .readers import Collector

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
SHARD_PATTERNS = ("*.tar", "*.tar.gz", "*.tgz")


def find_shards(path: str) -> list:
    """Shard files of a folder (*.tar), a single shard file or a glob pattern, sorted by name."""
    if os.path.isdir(path):
        shards = sorted({p for pat in SHARD_PATTERNS for p in glob.glob(os.path.join(path, pat))})
        if not shards:
            raise DataError(f"{path}: no webdataset shards in this folder (looked for {', '.join(SHARD_PATTERNS)})")
        return shards
    if os.path.isfile(path):
        return [path]
    if glob.has_magic(path):
        shards = sorted(p for p in glob.glob(path) if os.path.isfile(p))
        if not shards:
            raise DataError(f"{path}: no files match this pattern")
        return shards
    raise DataError(f"{path}: not found (expected a folder of .tar shards, a .tar file or a glob)")


def read_webdataset(path: str, max_skip_fraction: float = 0.05) -> PairSet:
    """All samples of the shards at `path` (folder, .tar file or glob)."""
    c = Collector(f"webdataset:{path}")
    blobs: list = []
    for shard in find_shards(path):
        shard_name = os.path.basename(shard)
        for key, parts in _read_shard(shard, c).items():
            where = f"{shard_name}:{key}"
            ext = next((e for e in IMAGE_EXTENSIONS if e in parts), None)
            if ext is None:
                c.skip("no image", where)
                continue
            caption = _caption(parts)
            if caption is None:
                c.skip("no caption", where)
                continue
            if isinstance(caption, bytes):
                c.skip("invalid UTF-8", where)
                continue
            i = c.add(f"{shard_name}/{key}.{ext}", None, caption, where, hash_key=key)
            if i == len(blobs):
                blobs.append(parts[ext])
    return c.finish(BytesImages(list(c.names), blobs), max_skip_fraction)


def _caption(parts: dict):
    """The caption text; None when there is none; the raw bytes when they are not UTF-8."""
    if "txt" in parts:
        try:
            return parts["txt"].decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError:
            return parts["txt"]
    if "json" in parts:
        try:
            meta = json.loads(parts["json"])
        except (ValueError, UnicodeDecodeError):
            return None
        if isinstance(meta, dict):
            text = meta.get("caption", meta.get("text"))
            return text if isinstance(text, str) else None
    return None


def _read_shard(shard: str, c: Collector) -> dict:
    """key -> {extension: bytes} for the members of one shard, in archive order."""
    name = os.path.basename(shard)
    try:
        tar = tarfile.open(shard, "r:*")
    except tarfile.TarError:
        raise DataError(f"{shard}: not a readable tar archive (plain, .gz, .bz2 or .xz)") from None
    except OSError as e:
        raise DataError(f"{shard}: cannot read ({e.strerror or e})") from None
    samples: dict = {}
    with tar:
        try:
            for member in tar:
                folder, base = os.path.split(member.name)
                if not member.isfile() or base.startswith(".") or "." not in base:
                    continue
                stem, ext = base.split(".", 1)
                key = f"{folder}/{stem}" if folder else stem
                parts = samples.setdefault(key, {})
                ext = ext.lower()
                if ext in parts:
                    c.skip("duplicate member", f"{name}:{member.name}", row=False)
                    continue
                f = tar.extractfile(member)
                parts[ext] = f.read() if f is not None else b""
            if _trailing_data(tar):  # tarfile stops quietly at a header cut short
                raise tarfile.ReadError("data after the last complete member")
        except (tarfile.TarError, EOFError, OSError) as e:
            # A shard cut short (an interrupted download): keep what was read, count the damage.
            c.skip("truncated shard", f"{name} after {len(samples)} samples: {e}", row=False)
    return samples


def _trailing_data(tar: tarfile.TarFile) -> bool:
    """Whether anything but the zero blocks that end an archive follows its last member."""
    tar.fileobj.seek(tar.offset)
    while True:
        block = tar.fileobj.read(1 << 16)
        if not block:
            return False
        if block.strip(b"\0"):
            return True
