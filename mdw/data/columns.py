"""String columns on disk: one memory-mappable pair of .npy files per column, so a million captions
or image names are read one at a time (or all at once) without a JSON parse.

    save_strings(folder, "caption", captions)     # caption_offsets.npy + caption_utf8.npy
    col = StringColumn(folder, "caption")         # len(col), col[i], col[a:b], col.to_list()
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def save_strings(folder: str, name: str, strings: Sequence[str]) -> None:
    """name_offsets.npy (n + 1,) int64 and name_utf8.npy (bytes,) uint8: string i is the bytes
    offsets[i]:offsets[i+1] (UTF-8; lone surrogates kept with surrogatepass)."""
    enc = lambda s: s.encode("utf-8", "surrogatepass")  # noqa: E731
    offsets = np.zeros(len(strings) + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(enc(s)) for s in strings), dtype=np.int64, count=len(strings)), out=offsets[1:])
    np.save(os.path.join(folder, f"{name}_offsets.npy"), offsets)
    if offsets[-1] == 0:                              # no bytes at all (numpy cannot map an empty file)
        np.save(os.path.join(folder, f"{name}_utf8.npy"), np.zeros(0, dtype=np.uint8))
        return
    blob = np.lib.format.open_memmap(os.path.join(folder, f"{name}_utf8.npy"), mode="w+", dtype=np.uint8,
                                     shape=(int(offsets[-1]),))
    for lo in range(0, len(strings), 65536):          # a chunk of strings encoded at a time: bounded memory
        hi = min(len(strings), lo + 65536)
        blob[offsets[lo]:offsets[hi]] = np.frombuffer(b"".join(enc(s) for s in strings[lo:hi]), dtype=np.uint8)
    blob.flush()
    del blob


class StringColumn(Sequence):
    """A memory-mapped string column: len(), col[i] → str, col.to_list() → every string."""

    def __init__(self, folder, name: str):
        self.offsets = np.load(os.path.join(folder, f"{name}_offsets.npy"), mmap_mode="r")
        self.blob = np.load(os.path.join(folder, f"{name}_utf8.npy"), mmap_mode="r")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"string column: index {i} out of range ({len(self)})")
        i %= len(self)
        return bytes(self.blob[self.offsets[i]:self.offsets[i + 1]]).decode("utf-8", "surrogatepass")

    def __iter__(self):
        for lo in range(0, len(self), 65536):          # a chunk decoded at a time
            yield from self._decode(lo, min(len(self), lo + 65536))

    def _decode(self, lo: int, hi: int) -> list:
        o = self.offsets[lo:hi + 1].tolist()
        data = bytes(self.blob[o[0]:o[-1]])
        return [data[o[i] - o[0]:o[i + 1] - o[0]].decode("utf-8", "surrogatepass") for i in range(hi - lo)]

    def to_list(self) -> list:
        return self._decode(0, len(self))
