"""Heatmap overlays as images: colour maps in numpy, PNG bytes, per-word grids with labels.

    arr = overlay(image_u8, heat, alpha=0.45, boxes=[[x0, y0, x1, y1]], display_size=256)
    png = png_bytes(arr)                                   # or save_png(arr, path), atomic
    grid = word_grid(image_u8, word_maps_of_one_pair, tile=128)

Images are uint8 (S, S, 3); heat maps are float in [0, 1] of any size (resized bilinearly to the
display size); boxes are [x0, y0, x1, y1] in [0, 1] image coordinates. No matplotlib needed.
"""
from __future__ import annotations

import io
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..runs.store import atomic_write_bytes
from .compute import WordMaps

# Turbo (Google, 2019), polynomial approximation by Ruofei Du: c(x) = Σ_k a_k x^k, k = 0..5.
_TURBO = np.array([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
])
CMAPS = ("turbo", "jet", "gray")
LABEL_H = 14  # px under each tile for the word and its score


def colourise(heat: np.ndarray, cmap: str = "turbo") -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours."""
    x = np.clip(np.asarray(heat, dtype=np.float64), 0.0, 1.0)
    if cmap == "turbo":
        powers = np.stack([x ** k for k in range(6)], -1)          # (H, W, 6)
        rgb = powers @ _TURBO.T
    elif cmap == "jet":
        rgb = np.stack([1.5 - np.abs(4 * x - c) for c in (3.0, 2.0, 1.0)], -1)
    elif cmap == "gray":
        rgb = np.repeat(x[..., None], 3, -1)
    else:
        raise ValueError(f"unknown colour map {cmap!r}; known: {', '.join(CMAPS)}")
    return (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def resize_map(heat: np.ndarray, size: int) -> np.ndarray:
    """(h, w) float map -> (size, size) float32, bilinear."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape == (size, size):
        return heat
    return np.asarray(Image.fromarray(heat).resize((size, size), Image.BILINEAR), dtype=np.float32)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """(S, S, 3) uint8 -> (size, size, 3); integer upscales keep pixels sharp (nearest)."""
    s = image.shape[0]
    if s == size:
        return image
    method = Image.NEAREST if size > s and size % s == 0 else Image.BICUBIC
    return np.asarray(Image.fromarray(image).resize((size, size), method))


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45, boxes: Optional[Sequence] = None,
            display_size: Optional[int] = None, cmap: str = "turbo", box_colour: tuple = (255, 255, 255),
            mark_peak: bool = False) -> np.ndarray:
    """Image blended with the coloured map ((1-α)·image + α·colour); optional boxes and peak mark."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"overlay: expected an (H, W, 3) uint8 image, got shape {image.shape}")
    size = int(display_size or image.shape[0])
    base = resize_image(image, size).astype(np.float32)
    h = resize_map(heat, size)
    out = (1 - alpha) * base + alpha * colourise(h, cmap).astype(np.float32)
    img = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for b in boxes or []:
        x0, y0, x1, y1 = (float(v) * size for v in b)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=box_colour, width=max(1, size // 128))
    if mark_peak:
        y, x = np.unravel_index(int(np.argmax(h)), h.shape)
        r = max(2, size // 32)
        draw.line([x - r, y, x + r, y], fill=(255, 255, 255), width=1)
        draw.line([x, y - r, x, y + r], fill=(255, 255, 255), width=1)
    return np.asarray(img)


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(arr: np.ndarray, path: str) -> str:
    """Write arr as a PNG atomically; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, png_bytes(arr))
    return path


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """Cut text (with an ellipsis) to fit `width` px in the default font."""
    if draw.textlength(text) <= width:
        return text
    while text and draw.textlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def label_tiles(tiles: Sequence[np.ndarray], labels: Sequence[str], cols: Optional[int] = None,
                pad: int = 4, background: tuple = (24, 24, 24)) -> np.ndarray:
    """Tiles of one size laid out in a grid, each with its label written under it."""
    if not tiles:
        raise ValueError("label_tiles: no tiles")
    th, tw = tiles[0].shape[:2]
    cols = max(1, min(cols or min(len(tiles), 6), len(tiles)))
    rows = (len(tiles) + cols - 1) // cols
    W = cols * tw + (cols + 1) * pad
    H = rows * (th + LABEL_H) + (rows + 1) * pad
    canvas = Image.new("RGB", (W, H), background)
    draw = ImageDraw.Draw(canvas)
    for k, (tile, text) in enumerate(zip(tiles, labels)):
        r, c = divmod(k, cols)
        x = pad + c * (tw + pad)
        y = pad + r * (th + LABEL_H + pad)
        canvas.paste(Image.fromarray(np.asarray(tile, dtype=np.uint8)), (x, y))
        draw.text((x + 1, y + th + 1), _fit(draw, text, tw - 2), fill=(235, 235, 235))
    return np.asarray(canvas)


def word_grid(image: np.ndarray, wm: WordMaps, words: Optional[Sequence[int]] = None, tile: int = 128,
              cols: Optional[int] = None, alpha: float = 0.45, boxes: Optional[Sequence] = None,
              cmap: str = "turbo", show_image: bool = True) -> np.ndarray:
    """The pair's image, then one overlay per word (all, or the indices `words`) labelled
    "word  s=0.123" (s(v, w)); the image tile is labelled with the caption's s(v, t)."""
    picks = list(range(len(wm.words))) if words is None else list(words)
    tiles, labels = [], []
    if show_image:
        tiles.append(resize_image(np.asarray(image, dtype=np.uint8), tile))
        labels.append(f"image  s={wm.pair_score:.3f}")
    for i in picks:
        tiles.append(overlay(image, wm.maps[i], alpha, boxes, tile, cmap))
        labels.append(f"{wm.words[i]}  s={wm.scores[i]:.3f}")
    if not tiles:
        tiles, labels = [resize_image(np.asarray(image, dtype=np.uint8), tile)], ["(no words)"]
    return label_tiles(tiles, labels, cols)
