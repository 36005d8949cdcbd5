"""Webdataset tar shards (as written by img2dataset): shard discovery and streaming of samples.

A sample is the run of consecutive members sharing a key (the member name up to the first dot of
its base name, folder kept): `00000001.jpg` + `00000001.txt` [+ `00000001.json`]. The caption is the
`.txt`, or else the `caption`/`text` field of the `.json`. Shards are read in sorted order, each
streamed once with the `webdataset` package's tar iterator, so only one sample's bytes are held at
a time; images are split 90/5/5 % by a hash of the key, like a table without a split column.

Bad input, skipped and counted (`PairSet.skipped`): no image, no caption, empty caption, invalid
UTF-8, duplicate rows, a duplicate member (same key and extension again in a shard), a member apart
from its sample (its key's run of members already ended earlier in the shard), a truncated shard
(what was read is kept). A file that is not a tar archive is a DataError naming it.

Two ways to read them:
- `prepare()` streams the shards once and decodes each image as it passes
  (`webdataset_stream.cached_webdataset`): the way a run reads them, any size of shard set;
- `read_webdataset` reads captions and keys only; its images (`ShardImages`) are fetched from the
  shards by member name when opened (for inspecting a source; slow for decoding everything).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import tarfile
import threading
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from ..errors import DataError
from .decode import open_image
from .pairset import PairSet
from .readers import Collector

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
SHARD_PATTERNS = ("*.tar", "*.tar.gz", "*.tgz")
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, ValueError)


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


def shards_identity(shards: list) -> str:
    """Changes when the shards may have changed: names, sizes and a hash of each one's first MiB."""
    h = hashlib.sha1(b"webdataset shards v1")
    for s in shards:
        try:
            with open(s, "rb") as f:
                head = f.read(1 << 20)
            h.update(f"{os.path.basename(s)}|{os.path.getsize(s)}|".encode() + hashlib.sha1(head).digest())
        except OSError as e:
            raise DataError(f"{s}: cannot read ({e.strerror or e})") from None
    return h.hexdigest()


# -- streaming samples ----------------------------------------------------------------------------
def iter_samples(shards: list, c: Collector,
                 progress: Optional[Callable[[float], None]] = None) -> Iterator[tuple]:
    """(shard path, key, parts) of every sample, shard by shard; parts: {ext (lower case):
    (member name, bytes)}. Skips and damage are counted in `c`; progress(fraction of shard bytes)."""
    sizes = [os.path.getsize(s) for s in shards]
    total, done, shown = max(1, sum(sizes)), 0, 0.0
    for shard, size in zip(shards, sizes):
        tell = [lambda: 0]
        for sample in _shard_samples(shard, c, tell):
            yield sample
            frac = (done + tell[0]()) / total
            if progress and frac - shown >= 0.002:      # at most ~500 reports
                progress(frac)
                shown = frac
        done += size
        if progress:
            progress(done / total)


def _check_tar(shard: str) -> None:
    try:
        with tarfile.open(shard, "r:*"):
            pass
    except tarfile.TarError:
        raise DataError(f"{shard}: not a readable tar archive (plain, .gz, .bz2 or .xz)") from None
    except OSError as e:
        raise DataError(f"{shard}: cannot read ({e.strerror or e})") from None


def _shard_samples(shard: str, c: Collector, tell: list) -> Iterator[tuple]:
    """The samples of one shard as they stream past; `tell[0]()` gives the bytes read so far."""
    from webdataset.tariterators import tar_file_iterator   # the package imports torch: ~3 s, only here
    _check_tar(shard)
    name = os.path.basename(shard)
    seen: dict = {}                   # key -> extensions met in this shard
    key, parts, n = None, {}, 0
    failed = False
    with open(shard, "rb") as f:
        tell[0] = f.tell
        try:
            for m in tar_file_iterator(f, skip_meta=None):
                folder, base = os.path.split(m["fname"])
                if base.startswith(".") or "." not in base:
                    continue
                stem, ext = base.split(".", 1)
                k, ext = (f"{folder}/{stem}" if folder else stem), ext.lower()
                exts = seen.setdefault(k, set())
                if ext in exts:
                    c.skip("duplicate member", f"{name}:{m['fname']}", row=False)
                    continue
                if k != key:
                    if key is not None:
                        n += 1
                        yield shard, key, parts
                    key, parts = None, {}
                    if exts:          # this key's run of members ended earlier in the shard
                        exts.add(ext)
                        c.skip("member apart from its sample", f"{name}:{m['fname']}", row=False)
                        continue
                    key = k
                exts.add(ext)
                parts[ext] = (m["fname"], m["data"])
        except _READ_ERRORS as e:
            # A shard cut short (an interrupted download): keep what was read, count the damage.
            failed = True
            c.skip("truncated shard", f"{name} after {n} samples: {str(e).split(' @ ')[0]}", row=False)
        if not failed and _ends_in_data(f):
            c.skip("truncated shard", f"{name} after {n} samples: data after the last complete member",
                   row=False)
        if key is not None:
            yield shard, key, parts


def _ends_in_data(f) -> bool:
    """Whether a plain (uncompressed) tar does not end with zero blocks, as a complete archive does:
    the tar reader stops quietly at a header cut short."""
    f.seek(0)
    if f.read(6).startswith(_COMPRESSED_MAGIC):
        return False              # a compressed stream cut short raises while it is read
    end = f.seek(0, os.SEEK_END)
    f.seek(max(0, end - 512))
    return bool(f.read().strip(b"\0"))


def accept_sample(c: Collector, shard: str, key: str, parts: dict) -> tuple:
    """Check one sample and add it to `c`: (image index or -1 when skipped, image extension)."""
    shard_name = os.path.basename(shard)
    where = f"{shard_name}:{key}"
    ext = next((e for e in IMAGE_EXTENSIONS if e in parts), None)
    if ext is None:
        return c.skip("no image", where), None
    caption = _caption(parts)
    if caption is None:
        return c.skip("no caption", where), None
    if isinstance(caption, bytes):
        return c.skip("invalid UTF-8", where), None
    return c.add(f"{shard_name}/{key}.{ext}", None, caption, where, hash_key=key), ext


def _caption(parts: dict):
    """The caption text; None when there is none; the raw bytes when they are not UTF-8."""
    if "txt" in parts:
        try:
            return parts["txt"][1].decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError:
            return parts["txt"][1]
    if "json" in parts:
        try:
            meta = json.loads(parts["json"][1])
        except (ValueError, UnicodeDecodeError):
            return None
        if isinstance(meta, dict):
            text = meta.get("caption", meta.get("text"))
            return text if isinstance(text, str) else None
    return None


# -- captions only, images fetched on demand ----------------------------------------------------------
@dataclass
class ShardImages:
    """Images left in their shards: image i is member members[i] = (shard path, member name), read
    by name when opened (one shard's index held at a time; thread-safe)."""

    names: list
    members: list
    base_identity: str
    _tar: dict = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __len__(self):
        return len(self.names)

    def key(self, i: int) -> str:
        return self.names[i]

    def read(self, i: int) -> bytes:
        shard, member = self.members[i]
        with self._lock:
            tar = self._tar.get(shard)
            if tar is None:
                for old in self._tar.values():
                    old.close()
                try:
                    tar = tarfile.open(shard, "r:*")
                except (tarfile.TarError, OSError) as e:
                    raise DataError(f"{shard}: cannot read ({e})") from None
                self._tar = {shard: tar}
            f = tar.extractfile(member)
            return f.read() if f is not None else b""

    def open(self, i: int, size: int):
        return open_image(self.read(i), size)

    def select(self, keep):
        keep = list(keep)
        return ShardImages([self.names[k] for k in keep], [self.members[k] for k in keep], self.base_identity)

    def identity(self) -> str:
        h = hashlib.sha1(self.base_identity.encode())
        for n in self.names:
            h.update(n.encode("utf-8", "surrogateescape") + b"\n")
        return h.hexdigest()


def read_webdataset(path: str, max_skip_fraction: float = 0.05) -> PairSet:
    """Captions and keys of the shards at `path` (folder, .tar file or glob), streamed once; the
    images stay in the shards (`ShardImages`). DataError for a file that is not a tar, no shards,
    or too many skipped samples."""
    shards = find_shards(path)
    c = Collector(f"webdataset:{path}")
    members: list = []
    for shard, key, parts in iter_samples(shards, c):
        i, ext = accept_sample(c, shard, key, parts)
        if i == len(members):
            members.append((shard, parts[ext][0]))
    return c.finish(ShardImages(list(c.names), members, shards_identity(shards)), max_skip_fraction)
