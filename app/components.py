"""Image outputs that a browser can fetch while another event shows the same image.

Gradio 6.31 writes a numpy / PIL output to `<cache>/<hash of its bytes>/image.webp` with
`Path.write_bytes` on every event, in place: when two events show the same image (a tab opened
twice, a pair clicked again) the file is truncated and rewritten while the browser may still be
streaming it, and the server fails the response ("Too much data for declared Content-Length"); the
image then never draws. These components write each distinct image once, atomically (a temp file
renamed into place), under a content-addressed name, and hand Gradio the file path: Gradio copies a
path into its cache once, atomically, and reuses the copy.
"""
from __future__ import annotations

import hashlib
import io
import os

import gradio as gr
import numpy as np
from PIL import Image

from mdw.runs.store import atomic_write_bytes


def image_file(value, cache_dir: str):
    """A numpy array (H, W[, C]) uint8 / float in [0, 1] or a PIL image -> the path of a PNG file
    holding it, written once (atomically) under cache_dir/mdw-<sha256>/image.png; other values
    (a path, None) unchanged."""
    if isinstance(value, np.ndarray):
        arr = value if value.dtype == np.uint8 else (np.clip(value, 0, 1) * 255).round().astype(np.uint8)
        value = Image.fromarray(arr)
    if not isinstance(value, Image.Image):
        return value
    buf = io.BytesIO()
    value.save(buf, format="PNG")
    data = buf.getvalue()
    path = os.path.join(cache_dir, f"mdw-{hashlib.sha256(data).hexdigest()[:32]}", "image.png")
    if not os.path.isfile(path):
        atomic_write_bytes(path, data)
    return path


class StableImage(gr.Image):
    """gr.Image (same front end: a template of it) whose array / PIL outputs go through image_file."""
    is_template = True

    def postprocess(self, value):
        return super().postprocess(image_file(value, self.GRADIO_CACHE))


class StableGallery(gr.Gallery):
    """gr.Gallery (a template of it) whose array / PIL items, captioned or not, go through image_file."""
    is_template = True

    def postprocess(self, value):
        if value is not None:
            value = [(image_file(v[0], self.GRADIO_CACHE), *v[1:]) if isinstance(v, (tuple, list))
                     else image_file(v, self.GRADIO_CACHE) for v in value]
        return super().postprocess(value)
