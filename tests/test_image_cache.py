import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from mdw.data.image_array import HEADER_BYTES, ImageArrayWriter
from mdw.data.image_cache import cached_images, decode_all
from mdw.data.decode import read_square
from mdw.data.pairset import BytesImages
from tests.helpers import tiny_pairset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CountingImages(BytesImages):
    """Real in-memory images that count how often they are decoded."""
    opened = 0

    def open(self, i, size):
        CountingImages.opened += 1
        return super().open(i, size)


def test_decode_keeps_only_the_good_images_in_order():
    """(Was: the corrupt image's row left black.) Now the array holds only the images that decode."""
    ps = tiny_pairset(n_images=12)
    ps.images.blobs[5] = b"\x89PNG\r\n\x1a\nthis is not a png"
    arr, bad = decode_all(ps, 16)
    assert arr.shape == (11, 16, 16, 3) and arr.dtype == np.uint8
    assert [i for i, _ in bad] == [5] and "UnidentifiedImageError" in bad[0][1]
    assert np.array_equal(arr[5], read_square(ps.images.blobs[6], 16)) and arr[4].std() > 10


def test_second_load_reads_the_cache_not_the_images(tmp_path):
    ps = tiny_pairset(n_images=12)
    ps = dataclasses.replace(ps, images=CountingImages(ps.images.names, ps.images.blobs))
    CountingImages.opened = 0
    a, _ = cached_images(ps, 16, str(tmp_path))
    assert CountingImages.opened == 12
    b, _ = cached_images(ps, 16, str(tmp_path))
    assert CountingImages.opened == 12  # no decode on the second load
    assert np.array_equal(np.asarray(a), np.asarray(b))
    c, _ = cached_images(ps, 20, str(tmp_path))  # another size is another cache entry
    assert c.shape[1] == 20 and CountingImages.opened == 24
    assert not list((tmp_path / "images").glob("*.tmp-*"))


def test_folder_identity_survives_a_fresh_copy_but_not_new_content(tmp_path):
    """A data folder copied again (new modification times, same bytes) is the same data: its runs
    resume and its caches stay; a file whose bytes change is not."""
    import os
    from mdw.data.pairset import FileImages
    ps = tiny_pairset(n_images=3)
    names = ps.images.names
    for n, b in zip(names, ps.images.blobs):
        (tmp_path / n).write_bytes(b)
    images = FileImages(str(tmp_path), list(names))
    before = images.identity()
    for n in names:
        os.utime(tmp_path / n, (1e9, 1e9))                        # touched: a re-copy
    assert images.identity() == before
    own = ps.images.blobs[0]
    (tmp_path / names[0]).write_bytes(own[:-1] + bytes([own[-1] ^ 1]))   # new content, same size
    assert images.identity() != before


# -- the memory-mapped image array -----------------------------------------------------------------
def test_writer_round_trips_values_shape_and_dtype(tmp_path):
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 256, (k, 8, 8, 3), dtype=np.uint8) for k in (3, 0, 5, 1)]
    path = str(tmp_path / "a.npy")
    with ImageArrayWriter(path, 8) as w:
        for c in chunks:
            w.append(c)
        arr = w.finish()
    assert isinstance(arr, np.memmap) and not arr.flags.writeable and arr.filename == path
    assert arr.shape == (9, 8, 8, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr, np.concatenate(chunks))
    assert np.array_equal(np.load(path), np.concatenate(chunks))               # a valid .npy for plain np.load
    assert os.path.getsize(path) == HEADER_BYTES + 9 * 8 * 8 * 3 and os.listdir(tmp_path) == ["a.npy"]
    with ImageArrayWriter(str(tmp_path / "empty.npy"), 4) as w:
        assert w.finish().shape == (0, 4, 4, 3)
    with ImageArrayWriter(path, 8) as w, pytest.raises(ValueError, match=r"rows must be \(k, 8, 8, 3\) uint8"):
        w.append(np.zeros((2, 8, 8, 3), np.float32))


def test_a_failed_or_killed_writer_leaves_no_final_file(tmp_path):
    path = tmp_path / "a.npy"
    with pytest.raises(RuntimeError):
        with ImageArrayWriter(str(path), 4) as w:
            w.append(np.ones((2, 4, 4, 3), np.uint8))
            raise RuntimeError("decoding failed half way")
    assert not os.listdir(tmp_path)                                           # temp file removed too
    code = ("import os, numpy as np; from mdw.data.image_array import ImageArrayWriter\n"
            f"w = ImageArrayWriter({str(path)!r}, 4); w.append(np.ones((2, 4, 4, 3), np.uint8))\n"
            "os.kill(os.getpid(), 9)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO)
    assert r.returncode == -9 and not path.exists()                           # killed: only its temp file
    assert [n for n in os.listdir(tmp_path) if n.startswith("a.npy.tmp-")]


def test_prepare_drops_corrupt_images_and_keeps_the_array_aligned(tmp_path):
    ps = tiny_pairset(n_images=12)
    ps.images.blobs[3] = b"not an image"
    ps.images.blobs[7] = b"\x89PNG\r\n\x1a\ncut"
    arr, bad = cached_images(ps, 16, str(tmp_path))
    assert isinstance(arr, np.memmap) and not arr.flags.writeable and len(arr) == 10
    assert [i for i, _ in bad] == [3, 7]
    kept = ps.drop_images([i for i, _ in bad], "corrupt image")
    assert kept.n_images == len(arr) and kept.skipped == {"corrupt image": 2}
    for i in range(kept.n_images):                # row i is image i of the PairSet after the drop
        assert np.array_equal(arr[i], read_square(kept.images.blobs[i], 16))
    again, bad2 = cached_images(ps, 16, str(tmp_path))                        # a hit: the same file
    assert again.filename == arr.filename and bad2 == [tuple(b) for b in bad]


def test_training_images_gather_batches_from_the_memmap_without_copying_it(tmp_path):
    import torch

    from mdw.train.data import Rows, to_float_images
    ps = tiny_pairset(n_images=10)
    arr, _ = cached_images(ps, 8, str(tmp_path))
    rows = Rows(arr)
    assert rows.numpy() is arr and rows.shape == (10, 8, 8, 3) and len(rows) == 10
    idx = torch.tensor([7, 2, 7, 0])                                          # any order, repeats
    got = rows[idx]
    assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), np.asarray(arr)[[7, 2, 7, 0]])
    assert np.array_equal(rows[np.array([3])].numpy(), np.asarray(arr)[[3]])
    part = rows[2:5]
    assert part.numpy().flags.writeable and np.array_equal(part.numpy(), np.asarray(arr)[2:5])   # copied out
    assert rows[4].shape == (8, 8, 3)
    assert to_float_images(got, torch.device("cpu")).shape == (4, 3, 8, 8)


def test_a_killed_writers_temp_file_is_removed_by_the_next_writer(tmp_path):
    """A decode killed half way leaves <entry>.npy.tmp-<pid>-<hex>.npy in the cache; the next writer
    of that entry removes it when its process is gone (a live writer's file is kept)."""
    path = str(tmp_path / "images" / "k-8px.npy")
    os.makedirs(tmp_path / "images")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = f"{path}.tmp-{int(dead.stdout)}-deadbeef.npy"
    live = f"{path}.tmp-{os.getppid()}-0badcafe.npy"
    for p in (stale, live):
        with open(p, "wb") as f:
            f.write(b"\0" * 4096)
    with ImageArrayWriter(path, 8) as w:
        w.append(np.zeros((2, 8, 8, 3), np.uint8))
        w.finish()
    assert not os.path.exists(stale) and os.path.exists(live)
