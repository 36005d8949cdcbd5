"""The app's image outputs are written once, atomically, under a content-addressed name (Gradio's
own numpy/PIL path rewrote the same file in place on every event, so a second event showing the same
image truncated it under a browser still fetching it: "Too much data for declared Content-Length",
seen with scripts/bench_app.py on the demo run's Correspondence tab)."""
import os

import numpy as np
from PIL import Image

from app.components import StableGallery, StableImage, image_file


def test_the_same_image_is_written_once_and_never_rewritten(tmp_path):
    arr = np.zeros((8, 6, 3), dtype=np.uint8)
    arr[:4, :, 0] = 255
    p = image_file(arr, str(tmp_path))
    st = os.stat(p)
    assert image_file(Image.fromarray(arr), str(tmp_path)) == p       # same pixels, same file
    assert os.stat(p).st_ino == st.st_ino and os.stat(p).st_mtime_ns == st.st_mtime_ns   # not rewritten
    assert np.array_equal(np.asarray(Image.open(p).convert("RGB")), arr)
    other = image_file(arr[::-1].copy(), str(tmp_path))
    assert other != p
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(os.path.dirname(p)),
                                                   os.path.basename(os.path.dirname(other))])  # no temp files
    assert image_file("x.png", str(tmp_path)) == "x.png" and image_file(None, str(tmp_path)) is None


def test_outputs_go_through_the_file_once(tmp_path):
    arr = np.full((5, 5, 3), 200, dtype=np.uint8)
    img = StableImage(interactive=False)
    img.GRADIO_CACHE = str(tmp_path)
    first = img.postprocess(arr)
    mtime = os.stat(first.path).st_mtime_ns
    second = img.postprocess(arr)
    assert first.path == second.path and os.stat(second.path).st_mtime_ns == mtime
    assert img.get_block_name() == "image"        # the same front end as gr.Image
    gal = StableGallery()
    gal.GRADIO_CACHE = str(tmp_path)
    data = gal.postprocess([(arr, "a caption"), arr])
    assert [d.image.path for d in data.root] == [first.path, first.path]
    assert data.root[0].caption == "a caption"
    assert gal.get_block_name() == "gallery"
