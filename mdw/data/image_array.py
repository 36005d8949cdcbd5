"""Decoded images on disk as one memory-mapped uint8 .npy of shape (n, S, S, 3), written in chunks.

    ImageArrayWriter(path, size)   append (k, S, S, 3) uint8 rows; finish() -> read-only np.memmap
    open_image_array(path)         a finished file as a read-only np.memmap
    decode_chunk(pool, items, ...) decode a chunk of images in threads: (good rows, bad list)
    ArrayImages                    an ImageSource whose images are rows of such an array

The writer reserves a fixed 128-byte header, writes rows after it as they come, and at the end seeks
back and writes numpy's own header (format 1.0) with the real row count, padded to exactly those
128 bytes. It writes to a temp name beside `path` and renames at the end, so a writer that fails or
is killed never leaves a half file under the final name (a killed one leaves its temp file).
Memory use is one chunk of rows, whatever the number of images.
"""
from __future__ import annotations

import hashlib
import io
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from .decode import to_square

HEADER_BYTES = 128


def _header(n: int, size: int) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                               "fortran_order": False, "shape": (int(n), size, size, 3)})
    head = buf.getvalue()
    if len(head) != HEADER_BYTES:   # numpy pads to a multiple of 64; (n, S, S, 3) always gives 128
        raise ValueError(f"npy header of shape {(n, size, size, 3)} is {len(head)} bytes, not {HEADER_BYTES}")
    return head


def open_image_array(path: str) -> np.memmap:
    """The (n, S, S, 3) uint8 array of a finished file, memory-mapped read-only (np.load, mmap_mode="r")."""
    return np.load(path, mmap_mode="r")


def _remove_dead_writers_files(path: str) -> None:
    """Remove `path`.tmp-<pid>-<hex>.npy files whose writer process is gone (killed half way)."""
    folder, base = os.path.split(os.path.abspath(path))
    for name in os.listdir(folder):
        if not (name.startswith(base + ".tmp-") and name.endswith(".npy")):
            continue
        try:
            pid = int(name[len(base) + 5:].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass
        except (ValueError, PermissionError):
            pass


class ImageArrayWriter:
    """Appends decoded images to `path` (a .npy of (n, size, size, 3) uint8) with bounded memory.

    Use as a context manager and call `finish()` inside it: leaving the block without finishing (an
    exception, a DataError from the caller) removes the temp file and leaves `path` untouched.
    """

    def __init__(self, path: str, size: int):
        self.path, self.size, self.rows = os.fspath(path), int(size), 0
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        _remove_dead_writers_files(self.path)
        self.tmp = f"{self.path}.tmp-{os.getpid()}-{secrets.token_hex(4)}.npy"
        self._f: Optional[io.BufferedWriter] = open(self.tmp, "wb")
        self._f.write(b"\0" * HEADER_BYTES)

    def __len__(self) -> int:
        return self.rows

    def append(self, rows: np.ndarray) -> None:
        """Write (k, size, size, 3) uint8 rows after those already written. ValueError on another
        shape or dtype."""
        rows = np.asarray(rows)
        if rows.dtype != np.uint8 or rows.ndim != 4 or rows.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"{self.path}: rows must be (k, {self.size}, {self.size}, 3) uint8, "
                             f"got {rows.shape} {rows.dtype}")
        self._f.write(np.ascontiguousarray(rows).tobytes())
        self.rows += len(rows)

    def finish(self) -> np.memmap:
        """Write the real header, rename the temp file to `path` and return it memory-mapped read-only."""
        self._f.seek(0)
        self._f.write(_header(self.rows, self.size))
        self._f.close()
        self._f = None
        os.replace(self.tmp, self.path)
        return open_image_array(self.path)

    def abort(self) -> None:
        """Drop what was written (the temp file); `path` is left as it was."""
        if self._f is not None:
            self._f.close()
            self._f = None
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self) -> "ImageArrayWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self._f is not None:   # not finished: an error, or the caller gave up
            self.abort()


def decode_chunk(pool: ThreadPoolExecutor, items: Sequence, open_one: Callable[[object], Image.Image],
                 size: int) -> tuple:
    """Decode a chunk of images in the threads of `pool`.

    items: (index, payload) pairs; open_one(payload) -> PIL image (may raise on a bad image).
    Returns (rows, bad): rows (k, size, size, 3) uint8 of the images that decoded, in the order of
    `items`; bad [(index, "ErrorType: message")] of those that did not.
    """
    def one(item):
        try:
            return to_square(open_one(item[1]), size)
        except Exception as e:  # corrupt, truncated, unreadable: reported to the caller
            return f"{type(e).__name__}: {e}"

    rows, bad = [], []
    for (index, _), r in zip(items, pool.map(one, items)):
        if isinstance(r, str):
            bad.append((index, r))
        else:
            rows.append(r)
    return (np.stack(rows) if rows else np.zeros((0, size, size, 3), np.uint8)), bad


@dataclass
class ArrayImages:
    """Images already decoded: image i is row rows[i] of `array` ((n_rows, S, S, 3) uint8, usually a
    read-only memmap); rows[i] == -1 marks an image that could not be decoded (open raises; the data
    stage drops it). `base_identity` names where the images came from (for caches)."""

    names: list
    array: Optional[np.ndarray]
    rows: np.ndarray
    base_identity: str

    def __len__(self):
        return len(self.names)

    def key(self, i: int) -> str:
        return self.names[i]

    def open(self, i: int, size: int) -> Image.Image:
        """The decoded (S, S) RGB image (already square; `size` is ignored). ValueError for an
        image that could not be decoded."""
        r = int(self.rows[i])
        if r < 0:
            raise ValueError(f"{self.names[i]}: this image could not be decoded")
        return Image.fromarray(np.asarray(self.array[r]), "RGB")

    def select(self, keep):
        keep = list(keep)
        return ArrayImages([self.names[k] for k in keep], self.array, np.asarray(self.rows)[keep],
                           self.base_identity)

    def identity(self) -> str:
        h = hashlib.sha1(self.base_identity.encode())
        for n in self.names:
            h.update(n.encode("utf-8", "surrogateescape") + b"\n")
        return h.hexdigest()
