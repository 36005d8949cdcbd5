"""Drawing for the built-in scenes: palette, shape outlines, backgrounds and anti-aliased rendering.

A scene is stored as numbers only (object specs + background parameters) and drawn on demand at any
size, so one scene rendered at 64 px and at 128 px is the same picture. Shapes are drawn at 2-4x
the requested size and box-downsampled (anti-aliased); the background is a smooth function of
position.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

RENDER_VERSION = "scenes-draw-1"  # bump when the drawing changes (image caches key on it)

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS = {  # saturated / bright: never close to the muted, dark backgrounds
    "red": (222, 30, 36),
    "green": (36, 178, 62),
    "blue": (40, 92, 240),
    "yellow": (246, 226, 30),
    "purple": (156, 56, 210),
    "orange": (252, 138, 14),
    "white": (242, 242, 242),
}
SIZES = ("small", "large")
SIZE_EXTENT = {"small": (0.17, 0.21), "large": (0.30, 0.38)}  # longest box side / image
TEXTURES = ("plain", "striped", "checked")

Rgb = tuple[int, int, int]


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: its words, box centre and longest side (image fractions), colour."""

    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    extent: float
    rgb: Rgb

    def box(self) -> tuple[float, float, float, float]:
        """Tight box [x0, y0, x1, y1] in [0, 1] image coordinates."""
        hw, hh = half_extents(self.shape)
        r = self.extent / 2
        return (self.cx - r * hw, self.cy - r * hh, self.cx + r * hw, self.cy + r * hh)


@dataclass(frozen=True)
class Background:
    """A muted two-colour gradient with a mild luminance texture and smooth blotches."""

    c0: Rgb
    c1: Rgb
    angle: float       # gradient direction, radians
    texture: str       # one of TEXTURES
    freq: float        # texture cycles per image side
    tex_angle: float   # stripe direction, radians
    tex_amp: float     # texture amplitude, 0-255 units
    noise_seed: int
    noise_amp: float   # blotch amplitude, 0-255 units


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: Background


# -- shapes -------------------------------------------------------------------------------------
def _raw_outline(shape: str) -> Optional[list[tuple[float, float]]]:
    if shape == "circle":
        return None
    if shape == "square":
        return [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    if shape == "triangle":  # upright, equilateral
        return [(0, -1), (1, 0.732), (-1, 0.732)]
    if shape == "diamond":
        return [(0, -1), (0.78, 0), (0, 1), (-0.78, 0)]
    if shape == "cross":  # a plus sign with thick arms
        a = 0.36
        return [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1),
                (-a, a), (-1, a), (-1, -a), (-a, -a)]
    if shape == "star":  # five points, a fat inner radius so it reads at small sizes
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else 0.48
            t = -math.pi / 2 + k * math.pi / 5
            pts.append((r * math.cos(t), r * math.sin(t)))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=None)
def outline(shape: str) -> Optional[np.ndarray]:
    """Polygon (k, 2) centred on its box, longest half-side 1; None for a circle."""
    raw = _raw_outline(shape)
    if raw is None:
        return None
    p = np.asarray(raw, dtype=np.float64)
    lo, hi = p.min(0), p.max(0)
    p = p - (lo + hi) / 2
    return p / (hi - lo).max() * 2


@lru_cache(maxsize=None)
def half_extents(shape: str) -> tuple[float, float]:
    """Half width and half height of the shape's box, relative to its longest half-side."""
    p = outline(shape)
    if p is None:
        return (1.0, 1.0)
    return (float(p[:, 0].max()), float(p[:, 1].max()))


# -- rendering ----------------------------------------------------------------------------------
def _supersample(size: int) -> int:
    return max(2, min(4, 256 // max(size, 1)))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    u = (np.arange(size, dtype=np.float32) + 0.5) / size
    return u[None, :], u[:, None]  # x varies along columns, y along rows


def render_background(bg: Background, size: int) -> np.ndarray:
    """(size, size, 3) float32 in 0-255; a smooth function of position, so any size agrees."""
    x, y = _grid(size)
    ca, sa = math.cos(bg.angle), math.sin(bg.angle)
    t = ((x - 0.5) * ca + (y - 0.5) * sa) / (abs(ca) + abs(sa)) + 0.5
    c0 = np.asarray(bg.c0, dtype=np.float32)
    c1 = np.asarray(bg.c1, dtype=np.float32)
    img = c0 + t[..., None] * (c1 - c0)
    lum = np.zeros((size, size), dtype=np.float32)
    w = 2 * math.pi * bg.freq
    if bg.texture == "striped":
        phase = (x * math.cos(bg.tex_angle) + y * math.sin(bg.tex_angle)) * w
        lum = lum + bg.tex_amp * np.tanh(2.5 * np.sin(phase))
    elif bg.texture == "checked":
        lum = lum + bg.tex_amp * np.tanh(4.0 * np.sin(x * w) * np.sin(y * w))
    if bg.noise_amp > 0:
        coarse = np.random.default_rng(bg.noise_seed).standard_normal((6, 6)).astype(np.float32)
        lum = lum + bg.noise_amp * np.asarray(
            Image.fromarray(coarse).resize((size, size), Image.BICUBIC))
    return img + lum[..., None]


def render_scene(scene: Scene, size: int) -> Image.Image:
    """The scene as a size x size RGB image; shapes anti-aliased by supersampling."""
    ss = _supersample(size)
    big = size * ss
    fg = Image.new("RGB", (big, big))
    mask = Image.new("L", (big, big))
    dfg, dmask = ImageDraw.Draw(fg), ImageDraw.Draw(mask)
    for o in scene.objects:
        pts = outline(o.shape)
        r = o.extent / 2 * big
        cx, cy = o.cx * big, o.cy * big
        if pts is None:
            bbox = [cx - r, cy - r, cx + r, cy + r]
            dfg.ellipse(bbox, fill=o.rgb)
            dmask.ellipse(bbox, fill=255)
        else:
            poly = [(cx + px * r, cy + py * r) for px, py in pts]
            dfg.polygon(poly, fill=o.rgb)
            dmask.polygon(poly, fill=255)
    # box-filter downsampling (exact pixel coverage, ~10x faster than LANCZOS here); fg is drawn
    # on black, so after this linear downsampling it is premultiplied by coverage
    fg_small = np.asarray(fg.reduce(ss), dtype=np.float32)
    cover = np.asarray(mask.reduce(ss), dtype=np.float32)[..., None] / 255.0
    out = render_background(scene.background, size) * (1.0 - cover) + fg_small
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
