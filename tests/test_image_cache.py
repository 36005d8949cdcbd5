import dataclasses

import numpy as np

from mdw.data.image_cache import cached_images, decode_all
from mdw.data.pairset import BytesImages
from tests.helpers import tiny_pairset


class CountingImages(BytesImages):
    """Real in-memory images that count how often they are decoded."""
    opened = 0

    def open(self, i, size):
        CountingImages.opened += 1
        return super().open(i, size)


def test_decode_shapes_and_corrupt_reported():
    ps = tiny_pairset(n_images=12)
    ps.images.blobs[5] = b"\x89PNG\r\n\x1a\nthis is not a png"
    arr, bad = decode_all(ps, 16)
    assert arr.shape == (12, 16, 16, 3) and arr.dtype == np.uint8
    assert [i for i, _ in bad] == [5]
    assert arr[5].max() == 0 and arr[4].std() > 10


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
