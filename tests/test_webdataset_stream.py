"""Webdataset shards read and decoded in one streaming pass: the cache entry, the skip counts, and a
peak memory that does not grow with the number of shards."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mdw.config import DataConfig
from mdw.data import webdataset_stream
from mdw.data.decode import read_square
from mdw.data.image_array import ArrayImages
from mdw.data.prepare import prepare
from helpers import png_bytes, write_shard

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def noise_image(seed: int, fmt: str, side: int = 256) -> bytes:
    """Random noise (incompressible): ~197 KB as PNG, ~150 KB as JPEG at 256 px."""
    arr = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def test_prepare_streams_decodes_once_and_hits_the_cache(tmp_path, monkeypatch):
    folder = tmp_path / "shards"
    folder.mkdir()
    blobs = {k: png_bytes(k, size=20) for k in range(24)}
    for s in range(2):
        samples = []
        for k in range(12 * s, 12 * s + 12):
            samples += [(f"{k:04d}.png", blobs[k]), (f"{k:04d}.txt", b"picture %d" % k)]
        write_shard(folder / f"{s:05d}.tar", samples)
    write_shard(folder / "00002.tar", [("0100.jpg", b"not a jpeg"), ("0100.txt", b"corrupt"),
                                       ("0101.png", blobs[0]), ("0101.txt", b"first member"),
                                       ("0102.png", blobs[1]), ("0102.txt", b"another"),
                                       ("0101.json", b'{"caption": "apart from its sample"}'),
                                       ("0103.txt", b"no image")])
    cfg = DataConfig(source="webdataset", path=str(folder), image_size=16, max_skip_fraction=0.2)
    decoded = []
    real = webdataset_stream.decode_chunk
    monkeypatch.setattr(webdataset_stream, "decode_chunk",
                        lambda pool, items, *a: decoded.append(len(items)) or real(pool, items, *a))
    p = prepare(cfg, str(tmp_path / "cache"))
    assert sum(decoded) == 27                                   # every image decoded once, as it streamed
    ps = p.pairs
    assert ps.n_images == 26 and len(p.images) == 26 and isinstance(p.images, np.memmap)
    assert not p.images.flags.writeable and p.images_path == p.images.filename
    assert os.path.isfile(p.images_path) and p.images_path.startswith(str(tmp_path / "cache" / "images"))
    assert ps.skipped == {"corrupt image": 1, "member apart from its sample": 1, "no image": 1}
    assert "00002.tar/0100.jpg" not in ps.images.names
    assert isinstance(ps.images, ArrayImages)
    i = ps.images.names.index("00001.tar/0013.png")
    assert np.array_equal(p.images[i], read_square(blobs[13], 16))       # row i is image i
    assert np.array_equal(np.asarray(ps.images.open(i, 16)), p.images[i])
    sub = ps.images.select([i, 0])
    assert sub.names == ["00001.tar/0013.png", ps.images.names[0]] and np.array_equal(np.asarray(sub.open(0, 16)), p.images[i])

    again = prepare(cfg, str(tmp_path / "cache"))              # the same shards: a hit, nothing decoded
    assert sum(decoded) == 27 and again.fingerprint == p.fingerprint and again.images_path == p.images_path
    assert again.pairs.captions == ps.captions and again.pairs.skipped == ps.skipped
    with pytest.raises(Exception, match="data.max_skip_fraction"):   # the hit re-checks the skip limit
        prepare(DataConfig(source="webdataset", path=str(folder), image_size=16, max_skip_fraction=0.0),
                str(tmp_path / "cache"))
    write_shard(folder / "00001.tar", [("0012.png", blobs[12]), ("0012.txt", b"a shard rewritten")])
    changed = prepare(cfg, str(tmp_path / "cache"))
    assert changed.pairs.n_images == 15 and sum(decoded) == 27 + 16 and changed.images_path != p.images_path


PEAK = """
import resource, sys
from mdw.config import DataConfig
from mdw.data.prepare import prepare
p = prepare(DataConfig(source="webdataset", path=sys.argv[1], image_size=16), sys.argv[2])
print(p.pairs.n_images, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_streaming_peak_memory_does_not_grow_with_the_number_of_shards(tmp_path):
    per_shard = 20
    pool = [noise_image(k, "PNG" if k % 2 else "JPEG") for k in range(2 * per_shard)]

    def shard_set(n_shards: int):
        folder = tmp_path / f"s{n_shards}"
        folder.mkdir()
        for s in range(n_shards):
            samples = []
            for k in range(per_shard):
                samples += [(f"{s:03d}{k:03d}.{'png' if k % 2 else 'jpg'}", pool[(s * 7 + k) % len(pool)]),
                            (f"{s:03d}{k:03d}.txt", b"noise %d %d" % (s, k))]
            write_shard(folder / f"{s:05d}.tar", samples)
        encoded = sum(len(pool[(s * 7 + k) % len(pool)]) for s in range(n_shards) for k in range(per_shard))
        out = subprocess.run([sys.executable, "-c", PEAK, str(folder), str(tmp_path / f"cache{n_shards}")],
                             cwd=REPO, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr
        n, peak_kb = map(int, out.stdout.split())
        assert n == n_shards * per_shard
        return encoded, peak_kb * 1024

    enc2, peak2 = shard_set(2)
    enc16, peak16 = shard_set(16)
    bound = 24 << 20
    # the old reader held every encoded image in memory: 16 shards would have cost it enc16 - enc2 more
    assert enc16 - enc2 > 1.5 * bound, (enc16, enc2)
    assert peak16 < peak2 + bound, f"peak RSS {peak16 / 2**20:.0f} MiB with 16 shards, {peak2 / 2**20:.0f} MiB with 2"


def test_streamed_prepare_counts_a_truncated_shard_and_refuses_a_non_tar(tmp_path):
    from mdw.errors import DataError

    path = write_shard(tmp_path / "s.tar", [(f"{k:03d}.{e}", d) for k in range(40)
                                            for e, d in (("png", png_bytes(k, size=16)), ("txt", b"a caption %d" % k))])
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2 + 100])
    p = prepare(DataConfig(source="webdataset", path=path, image_size=16, max_skip_fraction=1.0), str(tmp_path / "c"))
    assert 10 < p.pairs.n_images < 40 and p.pairs.skipped.get("truncated shard") == 1
    assert len(p.images) == p.pairs.n_images
    bad = tmp_path / "x.tar"
    bad.write_text("just text")
    with pytest.raises(DataError, match="x.tar: not a readable tar archive"):
        prepare(DataConfig(source="webdataset", path=str(bad), image_size=16), str(tmp_path / "c"))
    assert not list((tmp_path / "c" / "images").glob("*.tmp-*"))


def test_a_shard_edited_in_place_past_its_first_mib_is_read_again(tmp_path):
    """The cache key hashed only a shard's first MiB and its size: a caption corrected in place
    (same length) further in a big shard gave the next run the old caption from the cache."""
    folder = tmp_path / "shards"
    folder.mkdir()
    samples = [("0000.png", png_bytes(0, size=20)), ("0000.txt", b"first"), ("0000.pad", b"\0" * (1 << 20))]
    for k in range(1, 24):
        samples += [(f"{k:04d}.png", png_bytes(k, size=20)), (f"{k:04d}.txt", b"picture %d thing" % k)]
    shard = write_shard(folder / "00000.tar", samples)
    cfg = DataConfig(source="webdataset", path=str(folder), image_size=16)
    assert "picture 20 thing" in prepare(cfg, str(tmp_path / "cache")).pairs.captions
    data = open(shard, "rb").read()
    at = data.index(b"picture 20 thing")
    assert at > 1 << 20
    with open(shard, "r+b") as f:
        f.seek(at)
        f.write(b"picture 20 THING")
    captions = prepare(cfg, str(tmp_path / "cache")).pairs.captions
    assert "picture 20 THING" in captions and "picture 20 thing" not in captions
