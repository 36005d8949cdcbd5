"""Tensors for training and evaluating retrieval models, built from a prepared run's data.

The training images stay where the data stage left them: the image cache's uint8 (n_images, S, S, 3)
memmap, wrapped in `Rows`; a batch is gathered from it (numpy fancy indexing, a copy of the
batch only), then becomes float [0, 1] (B, 3, S, S) on the device when used; the evaluation split's
images too (5 % of a web-size set at 224 px is gigabytes). Text is the frozen encoder's cached g0
features, memory-mapped as well.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..data.prepare import Prepared
from ..data.split_check import check_run_splits
from ..models.text_cache import cached_g0_features


def to_float_images(batch_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float in [0, 1] on device. To a CUDA device the uint8
    batch goes through pinned (page-locked) memory, so the copy is asynchronous."""
    if torch.device(device).type == "cuda" and batch_u8.device.type == "cpu" and not batch_u8.is_pinned():
        batch_u8 = batch_u8.pin_memory()
    return batch_u8.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


class Rows:
    """Read-only rows of a numpy array or memmap, never copied whole: row i is array[index[i]] (index
    None: array[i]). Indexing with an int, a slice, or an index array / torch tensor of any order
    (repeats allowed) gathers just those rows into a new in-memory torch tensor of the array's dtype
    ((*row_shape) for an int, else (k, *row_shape)). Used for the images ((n, S, S, 3) uint8) and the
    frozen text features ((N, g0_dim) float32) of a run, both memory-mapped."""

    def __init__(self, array: np.ndarray, index: Optional[np.ndarray] = None):
        self.array = array
        self.index = None if index is None else np.asarray(index, dtype=np.int64)

    @property
    def shape(self) -> tuple:
        return (len(self),) + tuple(self.array.shape[1:])

    def __len__(self) -> int:
        return len(self.array) if self.index is None else len(self.index)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        if self.index is not None:
            idx = self.index[idx]
        out = np.asarray(self.array[idx])    # fancy indexing gathers a copy; a slice is a view
        if not (out.flags.writeable and out.flags.c_contiguous):
            out = np.array(out)                # a view of the (read-only) memmap: copy its rows out
        return torch.from_numpy(out)

    def subset(self, positions) -> "Rows":
        """Rows at `positions` of these rows (an index array), sharing the array (no copy)."""
        positions = np.asarray(positions, dtype=np.int64)
        return Rows(self.array, positions if self.index is None else self.index[positions])

    def numpy(self) -> np.ndarray:
        """The rows as one array: the underlying array itself when there is no index (no copy)."""
        return self.array if self.index is None else np.asarray(self.array[self.index])


@dataclass
class PairTensors:
    """The training pairs: caption n is shown with image pair_image[n] (noisy where is_noisy)."""
    images: Rows                  # (n_images, S, S, 3) uint8, every image of the data set (memmap)
    pair_image: torch.Tensor      # (N,) long
    g0: Rows                      # (N, g0_dim) float32 rows of the text cache's memmap
    pair_ids: np.ndarray          # (N,) the pairs' indices in the run's PairSet / pairs.json
    is_noisy: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.pair_image)

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple:
        return to_float_images(self.images[self.pair_image[idx]], device), self.g0[idx].to(device)


@dataclass
class RetrievalSplit:
    """A clean evaluation split: its images and every caption with its own image."""
    images: Rows                  # (n_img, S, S, 3) uint8 rows of the run's memmap (gathered a batch at a time)
    g0: Rows                      # (n_txt, g0_dim) float32 rows of the text cache's memmap
    caption_image: np.ndarray     # (n_txt,) index into `images`


def build_tensors(p: Prepared, encoder, cache_dir: str, eval_split: str = "test", progress=None) -> tuple:
    """(training pairs, clean eval split); g0 features of every caption come from the text cache.
    Raises DataError naming the split and the fix when train or `eval_split` is empty."""
    ps = p.pairs
    check_run_splits(ps, ("train", eval_split))
    g0_all = cached_g0_features(ps.captions, encoder, cache_dir, progress=progress)
    images = Rows(p.images)   # the run's memmap, not copied
    train = ps.pairs_in("train")
    g0_file = g0_all.numpy()  # the text cache's memmap (copy-on-write), not copied either
    pairs = PairTensors(images, torch.from_numpy(ps.pair_image[train]).long(), Rows(g0_file, train), train,
                        None if ps.is_noisy is None else ps.is_noisy[train].astype(bool))
    ev = ps.pairs_in(eval_split)
    img_ids = ps.images_in(eval_split)
    remap = np.full(ps.n_images, -1, dtype=np.int64)
    remap[img_ids] = np.arange(len(img_ids))
    split = RetrievalSplit(images.subset(img_ids), Rows(g0_file, ev), remap[ps.true_image[ev]])
    return pairs, split


@torch.no_grad()
def embed_split(model, split: RetrievalSplit, batch_size: int = 512) -> tuple:
    """(image embeddings, text embeddings) of a split, L2-normalised, float32 on the CPU."""
    was = model.training
    model.eval()
    dev = model.device
    img = torch.cat([model.encode_image(to_float_images(split.images[i:i + batch_size], dev)).float().cpu()
                     for i in range(0, len(split.images), batch_size)])
    txt = torch.cat([model.encode_text_g0(split.g0[i:i + batch_size].to(dev)).float().cpu()
                     for i in range(0, len(split.g0), batch_size)])
    model.train(was)
    return img, txt
