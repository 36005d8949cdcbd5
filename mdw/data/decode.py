"""The one way the product turns an image into RGB pixels.

Every image the product reads goes through here: the data sources and the image cache (files and
webdataset bytes), `mdw score`, `mdw query --image`, `mdw heatmap --image` and the app's uploads.

    open_image(source, size)   -> RGB PIL image, upright, 8 bit per channel
    read_square(source, size)  -> (size, size, 3) uint8, centre-cropped and resized like the caches
    to_square(img, size)       -> the crop and resize alone

What it does, so that no kind of file decodes silently wrong:
- EXIF orientation is applied (`PIL.ImageOps.exif_transpose`): a phone photo tagged "rotate 90°"
  comes out the way a viewer shows it. JPEGs are still decoded at reduced scale when `size` is
  small (draft mode); the orientation tag survives it and is applied after.
- Greyscale and palette images become grey/colour RGB; CMYK, YCbCr, LAB, HSV are converted by PIL.
- Transparency (LA, La, PA, RGBA, RGBa, P with a transparent colour) is composited over white: what
  a viewer shows on a white page, not the arbitrary colour stored under transparent pixels.
- High bit depth is scaled to 8 bit, never clipped:
  * 16-bit modes (`I;16`, `I;16B`, `I;16L`, ...) and uint16 arrays: value / 257 (65535 -> 255);
  * 32-bit integer mode `I` (and other integer arrays): values in 0..255 are kept as they are (8-bit
    data widened), values in 0..65535 are taken as 16-bit data (/ 257; older Pillow opens 16-bit
    PNGs as `I`), anything else (negative, > 65535) is min-max stretched to 0..255;
  * float mode `F` and float arrays: values in [0, 1] are scaled by 255, anything else is min-max
    stretched to 0..255; NaN and infinities count as the lowest finite value.
  Alpha channels of arrays are scaled the same way as their colour channels.
Multi-frame files (GIF, TIFF) give their first frame. Decompression bombs and truncated files
raise PIL's own errors (`PIL.Image.DecompressionBombError`, OSError), as before.
"""
from __future__ import annotations

import io
import os
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageOps

from ..errors import DataError

ImageInput = Union[str, os.PathLike, bytes, io.IOBase, Image.Image, np.ndarray]

BACKGROUND = (255, 255, 255)   # transparent pixels are shown over white
_ALPHA_MODES = {"LA": "LA", "La": "LA", "PA": "PA", "RGBA": "RGBA", "RGBa": "RGBA"}
_ARRAY_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}   # channels -> PIL mode (uint8)


def open_image(source: ImageInput, size: int = 0) -> Image.Image:
    """Decode `source` (a path, encoded bytes, a binary file object, a PIL image or an array) to an
    upright RGB PIL image (mode "RGB", 8 bit per channel).

    size: the side the caller will crop/resize to, in px; JPEGs are decoded at a reduced scale of at
    least that side (0: full size). Raises OSError / ValueError / PIL.Image.DecompressionBombError
    for unreadable files (as PIL does) and DataError for an array of an unsupported shape or dtype.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with Image.open(fp) as img:
        if img.format == "JPEG" and size:
            img.draft("RGB", (size, size))
        img.load()
        return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """An upright RGB copy of a PIL image of any mode (see the module docstring for each mode)."""
    if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode.startswith("I;16"):
        return _grey(_scale_uint16(np.asarray(img)))
    if mode == "I":
        return _grey(_scale_int(np.asarray(img)))
    if mode == "F":
        return _grey(_scale_float(np.asarray(img)))
    if mode == "P" and "transparency" in img.info:
        return _over_background(img.convert("RGBA"))
    if mode in _ALPHA_MODES:
        return _over_background(img.convert(_ALPHA_MODES[mode]).convert("RGBA"))
    if mode == "RGB":
        return img.copy()
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise DataError(f"image mode {mode!r} cannot be converted to RGB ({e})") from None


def array_to_rgb(arr: np.ndarray) -> Image.Image:
    """An RGB PIL image from an (H, W), (H, W, 1), (H, W, 2) grey+alpha, (H, W, 3) RGB or
    (H, W, 4) RGBA array of bool, integer or float values (scaled to 8 bit as the module docstring
    says; alpha composited over white). Raises DataError naming the shape or dtype otherwise."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in _ARRAY_MODES or min(arr.shape[:2]) < 1:
        raise DataError(f"image array: expected shape (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4), "
                        f"got {arr.shape}")
    if arr.dtype == np.bool_:
        u8 = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint8:
        u8 = arr
    elif arr.dtype == np.uint16:
        u8 = _scale_uint16(arr)
    elif np.issubdtype(arr.dtype, np.integer):
        u8 = _scale_int(arr)
    elif np.issubdtype(arr.dtype, np.floating):
        u8 = _scale_float(arr)
    else:
        raise DataError(f"image array: unsupported dtype {arr.dtype} (use integers, floats or bool)")
    mode = _ARRAY_MODES[arr.shape[2]]
    img = Image.fromarray(np.ascontiguousarray(u8[..., 0] if mode == "L" else u8), mode)
    return to_rgb(img)


def to_square(img: Image.Image, size: int) -> np.ndarray:
    """(size, size, C) uint8: the centred square of side min(w, h), resized (bicubic, antialiased)."""
    w, h = img.size
    if w != h:
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC, reducing_gap=2.0)
    return np.asarray(img, dtype=np.uint8)


def read_square(source: ImageInput, size: int) -> np.ndarray:
    """(size, size, 3) uint8 from a path, bytes, a PIL image or an array, through `open_image` and
    `to_square` (as the data caches do). Raises DataError naming the file when it is missing or
    cannot be decoded, or naming the shape/dtype of an unusable array."""
    if not isinstance(source, (str, os.PathLike)):
        return to_square(open_image(source, size), size)
    if not os.path.isfile(source):
        raise DataError(f"{source}: no such image file")
    try:
        img = open_image(source, size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{source}: cannot read the image ({e})") from None
    return to_square(img, size)


# -- scaling to 8 bit --------------------------------------------------------------------------------
def _grey(u8: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(u8), "L").convert("RGB")


def _over_background(rgba: Image.Image) -> Image.Image:
    return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba).convert("RGB")


def _to_u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return _to_u8(np.full(values.shape, lo))
    return _to_u8((values - lo) * (255.0 / (hi - lo)))


def _scale_uint16(values: np.ndarray) -> np.ndarray:
    return _to_u8(values.astype(np.float64) / 257.0)


def _scale_int(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.float64)
    if v.size == 0 or (v.min() >= 0 and v.max() <= 255):
        return _to_u8(v)
    if v.min() >= 0 and v.max() <= 65535:
        return _to_u8(v / 257.0)
    return _stretch(v)


def _scale_float(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros(v.shape, np.uint8)
    v = np.where(finite, v, v[finite].min())
    if v.min() >= 0 and v.max() <= 1:
        return _to_u8(v * 255.0)
    return _stretch(v)
