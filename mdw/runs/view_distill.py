"""The distilled side of a run folder as the app shows it: the distilled set and P̃, snapshots and
their evolution (grids, GIF; the change and curves are in mdw/views/evolution.py), decoded captions and
the recall table.
Every method returns None / [] when the run has not written the file yet.
"""
from __future__ import annotations

import io
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from .migrate import open_run
from .store import atomic_write_bytes, read_json


def image_grid(images: np.ndarray, cols: int = 8, tile: int = 96, pad: int = 2,
               labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """(n, S, S, 3) uint8 → one uint8 grid image (nearest upscaling to `tile`), optional labels."""
    from ..heatmaps.render import label_tiles, resize_image
    tiles = [resize_image(np.asarray(im, dtype=np.uint8), tile) for im in images]
    if not tiles:
        return np.zeros((tile, tile, 3), np.uint8)
    if labels is not None:
        return label_tiles(tiles, list(labels), cols)
    n = len(tiles)
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    out = np.full((rows * (tile + pad) + pad, cols * (tile + pad) + pad, 3), 24, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        y, x = pad + r * (tile + pad), pad + c * (tile + pad)
        out[y:y + tile, x:x + tile] = t
    return out


class DistillView:
    def __init__(self, run_dir):
        self.layout = open_run(run_dir)      # an older run is upgraded first
        self.run_dir = os.fspath(self.layout.root)
        self._final = None
        self._snaps: dict = {}

    # ----- the distilled set ----------------------------------------------------------------
    def distilled(self):
        """The final DistilledSet (None before the distill stage)."""
        from ..distill.synset import DistilledSet
        p = self.layout.distilled
        if self._final is None and p.is_file():
            self._final = DistilledSet.load(p)
        return self._final

    def p_matrix(self) -> Optional[np.ndarray]:
        syn = self.distilled()
        return None if syn is None else syn.p().detach().cpu().numpy()

    def decoded(self) -> list:
        """distill/decoded.json rows: index, init_pair, nearest [{pair, caption, sim}]."""
        p = self.layout.decoded
        return read_json(p)["rows"] if p.is_file() else []

    def text_label(self, j: int) -> str:
        """The nearest real caption of distilled text j (or "text j")."""
        rows = self.decoded()
        if 0 <= j < len(rows) and rows[j].get("nearest"):
            return rows[j]["nearest"][0]["caption"]
        return f"text {j}"

    def top_matches(self, i: int, k: int = 5) -> list:
        """The k distilled texts P̃ matches best with distilled image i: [{text, p, caption}]."""
        pm = self.p_matrix()
        if pm is None:
            return []
        i = self.check_index(i)
        order = np.argsort(-pm[i], kind="stable")[:k]
        return [{"text": int(j), "p": round(float(pm[i, j]), 4), "caption": self.text_label(int(j))} for j in order]

    def check_index(self, i) -> int:
        syn = self.distilled()
        m = 0 if syn is None else syn.m
        try:
            i = int(i)
        except (TypeError, ValueError):
            raise ValueError(f"distilled index must be an integer, got {i!r}") from None
        if not 0 <= i < m:
            raise ValueError(f"no distilled pair {i} (the set has {m})")
        return i

    # ----- snapshots ------------------------------------------------------------------------
    def snapshot_iterations(self) -> list:
        p = self.layout.snapshot_index
        its = read_json(p)["iterations"] if p.is_file() else []
        return [int(i) for i in its if self.layout.snapshot(int(i)).is_file()]

    def snapshot_path(self, it: int) -> str:
        return os.fspath(self.layout.snapshot(it))

    def snapshot(self, it: int):
        """The DistilledSet saved at iteration `it` (cached); ValueError when there is none."""
        from ..distill.synset import DistilledSet
        it = int(it)
        if it not in self._snaps:
            if it not in self.snapshot_iterations():
                raise ValueError(f"no snapshot at iteration {it}")
            self._snaps[it] = DistilledSet.load(self.snapshot_path(it))
        return self._snaps[it]

    def snapshot_images(self, it: int) -> np.ndarray:
        """Ṽ at iteration `it` as uint8 (M, S, S, 3)."""
        return self.snapshot(it).images_u8()

    def evolution_gif(self, cols: int = 8, tile: int = 64, ms: int = 400) -> Optional[str]:
        """distill/evolution.gif: one frame (the grid of Ṽ) per snapshot; its path, None without snapshots."""
        its = self.snapshot_iterations()
        if not its:
            return None
        frames = [Image.fromarray(image_grid(self.snapshot_images(it), cols, tile)) for it in its]
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0)
        return atomic_write_bytes(self.layout.evolution_gif, buf.getvalue())

    # ----- evaluation -----------------------------------------------------------------------
    def results(self) -> list:
        """eval/results.json rows ([] before the evaluate stage)."""
        p = self.layout.eval_results
        return read_json(p)["rows"] if p.is_file() else []
