"""Frozen text features g0(t), computed once per (captions, encoder) and cached on disk.

g0 is frozen, so every stage (DTCL, distillation init, evaluation) trains on these cached
features. The file is `cache_dir/text/<encoder_id>-<fingerprint>.npy`: the (N, g0_dim) float32
features in caption order, written atomically (a killed run never leaves half a file) and opened
memory-mapped (copy-on-write), so a million captions' features are not held in memory. Each distinct
caption is encoded once (web data repeats captions). A file that does not match (other shape,
unreadable) is recomputed.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import torch

from ..progress import progress_bar
from ..runs.store import atomic_save

FORMAT_VERSION = 2      # 2: .npy, memory-mapped; 1: a torch .pt dict
ENCODE_CHUNK = 16384    # distinct captions encoded (and held) at a time


class G0Encoder(Protocol):
    """What the cache needs of a text encoder (FrozenTextEncoder, FrozenOpenClipText)."""
    encoder_id: str
    g0_dim: int

    def encode_g0(self, captions: Sequence[str], batch_size: int = 256,
                  progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor: ...


def text_fingerprint(captions: Sequence[str], key_extra: str = "") -> str:
    """A hash of the captions in order (and `key_extra`); any change gives another key."""
    h = hashlib.sha1(f"v{FORMAT_VERSION}|{len(captions)}|{key_extra}|".encode())
    for c in captions:
        h.update(c.encode("utf-8", errors="surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:20]


def text_cache_path(captions: Sequence[str], encoder: G0Encoder, cache_dir: str, key_extra: str = "") -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", encoder.encoder_id)
    return os.path.join(cache_dir, "text", f"{name}-{text_fingerprint(captions, key_extra)}.npy")


def _load(path: str, n: int, dim: int) -> Optional[torch.Tensor]:
    """The cached features memory-mapped copy-on-write (writable for torch, never written back);
    None when the file is unreadable or of another shape or type."""
    try:
        feats = np.load(path, mmap_mode="c")
    except (OSError, ValueError):
        return None
    if feats.dtype != np.float32 or feats.shape != (n, dim):
        return None
    return torch.from_numpy(feats)


def cached_g0_features(captions: Sequence[str], encoder: G0Encoder, cache_dir: str, key_extra: str = "",
                       progress: Optional[Callable[[float], None]] = None, batch_size: int = 256,
                       show_bar: Optional[bool] = None) -> torch.Tensor:
    """(N, g0_dim) float32 CPU features of `captions` (memory-mapped copy-on-write), from the cache or
    encoded once per distinct caption and saved.

    `encoder` may be an MDWModel (its `.text` is used). `progress(done_frac)` is called while
    encoding (and with 1.0 on a cache hit); a tqdm bar shows in a terminal (`show_bar` forces it).
    """
    if hasattr(encoder, "encode_text_g0"):  # an MDWModel
        encoder = encoder.text
    captions = list(captions)
    path = text_cache_path(captions, encoder, cache_dir, key_extra)
    if os.path.isfile(path):
        feats = _load(path, len(captions), encoder.g0_dim)
        if feats is not None:
            if progress is not None:
                progress(1.0)
            return feats

    first: dict = {}
    where = np.fromiter((first.setdefault(c, len(first)) for c in captions), dtype=np.int64, count=len(captions))
    distinct = list(first)
    del first
    # rows of each distinct caption, grouped: order[start[d]:start[d + 1]] are the captions equal to distinct[d]
    order = np.argsort(where, kind="stable")
    start = np.concatenate([[0], np.cumsum(np.bincount(where, minlength=len(distinct)))])
    sink = (lambda frac, message="": progress(frac)) if progress is not None else None

    def write(tmp: str) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(captions), encoder.g0_dim))
        with progress_bar(f"text features ({len(distinct)} distinct of {len(captions)} captions)", sink=sink,
                          show=show_bar) as report:
            for lo in range(0, len(distinct), ENCODE_CHUNK):     # bounded memory: one chunk's features
                hi = min(len(distinct), lo + ENCODE_CHUNK)
                feats = encoder.encode_g0(distinct[lo:hi], batch_size=batch_size,
                                          progress=lambda done, total, lo=lo: report((lo + done) / len(distinct)))
                rows = order[start[lo]:start[hi]]
                out[rows] = feats.detach().float().cpu().numpy()[where[rows] - lo]
            report(1.0)
        out.flush()
        del out

    atomic_save(path, write)
    return _load(path, len(captions), encoder.g0_dim)
