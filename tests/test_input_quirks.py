"""Input quirks the product is said to handle, each on data made here: tables with a UTF-8 BOM and
CRLF line ends, truncated and zero-byte JPEGs, decompression bombs, WebP in webdataset shards, skip
counts in a run's data/summary.json, and path traversal on the app's file route."""
from __future__ import annotations

import http.client
import io
import json
import os
import urllib.parse

import numpy as np
import pytest
from PIL import Image, features

from helpers import image_bytes, png_bytes, write, write_images, write_shard
from mdw.config import DataConfig, RunConfig, apply_overrides
from mdw.data.decode import read_square
from mdw.data.prepare import prepare
from mdw.data.readers import read_flickr_folder
from mdw.data.tables import read_table
from mdw.data.webdataset import read_webdataset
from mdw.errors import DataError
from mdw.pipeline import run_pipeline
from mdw.runs.context import run_in_context
from mdw.runs.store import RunStore, read_jsonl

BOM = b"\xef\xbb\xbf"


def bom_crlf(text: str) -> bytes:
    """The same text as a Windows editor saves it: a UTF-8 BOM, then CRLF line ends."""
    return BOM + text.replace("\n", "\r\n").encode("utf-8")


def same_pairs(a, b) -> None:
    """Two PairSets read the same: images, splits, captions, pairs, skips (and where they were)."""
    assert a.images.names == b.images.names
    assert list(a.image_split) == list(b.image_split)
    assert a.captions == b.captions
    assert list(a.pair_image) == list(b.pair_image)
    assert a.skipped == b.skipped and a.skipped_examples == b.skipped_examples


def noisy_jpeg(seed: int, side: int = 64) -> bytes:
    """A JPEG of random pixels: no part of it can be left out and still decode."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def csv_table(folder, rows) -> str:
    """image,caption,split rows written as folder/pairs.csv."""
    return write(folder / "pairs.csv", "image,caption,split\n" + "".join(f"{i},{c},{s}\n" for i, c, s in rows))


# -- 1. UTF-8 BOM and CRLF line ends ------------------------------------------------------------------
TABLES = {
    # image first, split last: a BOM left on the header or a CR left on a field would show
    "csv": ("pairs.csv", "image,caption,split\na.jpg,\"a red, red thing\",train\na.jpg,\"two\nlines\",train\n"
                         "b.jpg,green,val\nc.jpg,blue,test\nd.jpg,yellow,TRAIN\nd.jpg,yellow,TRAIN\n"
                         "gone.jpg,lost,train\n"),
    # no split column: images are split by a hash of their name, which a stray CR would change
    "tsv": ("pairs.tsv", "image\ttitle\n" + "".join(f"{n}.jpg\tcaption of {n}\n" for n in "abcd")),
    "jsonl": ("pairs.jsonl", "".join(json.dumps(o) + "\n" for o in [
        {"image": "a.jpg", "caption": "one", "split": "train"}, {"image": "a.jpg", "caption": "two", "split": "train"},
        {"image": "b.jpg", "caption": "three", "split": "dev"}, {"image": "c.jpg", "caption": "four", "split": "test"},
        {"image": "d.jpg", "caption": "five", "split": "train"}]) + '["not", "an object"]\n'),
}


@pytest.mark.parametrize("kind", list(TABLES))
def test_bom_and_crlf_table_reads_like_the_clean_one(tmp_path, kind):
    name, text = TABLES[kind]
    for folder, data in (("clean", text.encode("utf-8")), ("dirty", bom_crlf(text))):
        write_images(tmp_path / folder, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
        write(tmp_path / folder / name, data)
    clean = read_table(str(tmp_path / "clean" / name), max_skip_fraction=1.0)
    dirty = read_table(str(tmp_path / "dirty" / name), max_skip_fraction=1.0)
    same_pairs(clean, dirty)
    assert clean.n_images == 4 and not any(c != c.strip() or "\r" in c for c in dirty.captions)
    if kind == "csv":
        assert dirty.captions[:2] == ["a red, red thing", "two lines"]
        assert dirty.skipped == {"duplicate row": 1, "missing image": 1}
        assert [e["where"] for e in dirty.skipped_examples] == ["pairs.csv line 8", "pairs.csv line 9: gone.jpg"]
        assert dirty.counts()["dev"] == {"images": 1, "pairs": 1}
    if kind == "jsonl":
        assert dirty.skipped_examples == [{"reason": "not a JSON object", "where": "pairs.jsonl line 6"}]


@pytest.mark.parametrize("layout", ["captions.tsv", "Flickr8k.token.txt"])
def test_bom_and_crlf_flickr_folder_reads_like_the_clean_one(tmp_path, layout):
    names = ["1_x.jpg", "2_y.jpg", "3_z.jpg", "4_w.jpg"]
    if layout == "captions.tsv":  # caption_index last: a CR left on it would hide the duplicate
        files = {"captions.tsv": "image\tcaption\tcaption_index\n" + "".join(
                     f"{n}\tphoto of {n}\t{k}\n" for n in names for k in range(2)) + "1_x.jpg\tphoto of 1_x.jpg\t0\n",
                 "train.txt": "1_x.jpg\n2_y.jpg\n", "dev.txt": "3_z.jpg\n", "test.txt": "4_w.jpg\n"}
        images = "images"
    else:  # image#k first: a BOM left on it would put the first image in no split
        files = {"Flickr8k.token.txt": "".join(f"{n}#{k}\tA photo of {n} .\n" for n in names for k in range(2))
                 + "1_x.jpg#0\tA photo of 1_x.jpg .\n",
                 "Flickr_8k.trainImages.txt": "1_x.jpg\n2_y.jpg\n", "Flickr_8k.devImages.txt": "3_z.jpg\n",
                 "Flickr_8k.testImages.txt": "4_w.jpg\n"}
        images = "Flicker8k_Dataset"
    for folder, encode in (("clean", lambda t: t.encode("utf-8")), ("dirty", bom_crlf)):
        write_images(tmp_path / folder / images, names)
        for fname, text in files.items():
            write(tmp_path / folder / fname, encode(text))
    clean = read_flickr_folder(str(tmp_path / "clean"), max_skip_fraction=1.0)
    dirty = read_flickr_folder(str(tmp_path / "dirty"), max_skip_fraction=1.0)
    same_pairs(clean, dirty)
    assert dirty.counts() == {"train": {"images": 2, "pairs": 4}, "dev": {"images": 1, "pairs": 2},
                              "test": {"images": 1, "pairs": 2}}
    assert dirty.skipped == {"duplicate row": 1}
    assert dirty.skipped_examples[0]["where"] == f"{layout} line {10 if layout == 'captions.tsv' else 9}"
    assert not any("\r" in c or "\ufeff" in c for c in dirty.captions + dirty.images.names)


# -- 2. truncated and zero-byte JPEGs -------------------------------------------------------------------
def table_with_bad_images(folder, n_good: int = 20) -> str:
    """pairs.csv: half.jpg (a JPEG cut in half) and empty.jpg (0 bytes) among n_good good JPEGs
    (the last two good ones in test), all with one caption."""
    folder.mkdir(exist_ok=True)
    whole = noisy_jpeg(99)
    write(folder / "half.jpg", whole[: len(whole) // 2])
    write(folder / "empty.jpg", b"")
    good = [f"g{i:02d}.jpg" for i in range(n_good)]
    for i, n in enumerate(good):
        write(folder / n, noisy_jpeg(i))
    rows = [("half.jpg", "a cut photo", "train"), ("empty.jpg", "an empty file", "train")]
    rows += [(n, f"good photo {i}", "test" if i >= n_good - 2 else "train") for i, n in enumerate(good)]
    return csv_table(folder, rows)


def test_truncated_and_zero_byte_jpegs_are_dropped_and_counted(tmp_path, cache_dir):
    path = table_with_bad_images(tmp_path / "data")
    with pytest.raises(DataError, match=r"half\.jpg: cannot read the image \(image file is truncated"):
        read_square(str(tmp_path / "data" / "half.jpg"), 16)
    with pytest.raises(DataError, match=r"empty\.jpg: cannot read the image"):
        read_square(str(tmp_path / "data" / "empty.jpg"), 16)
    p = prepare(DataConfig(source="csv", path=path, image_size=16, max_skip_fraction=0.1), cache_dir)
    assert p.pairs.skipped == {"corrupt image": 2}
    assert p.pairs.skipped_examples == [{"reason": "corrupt image", "where": "half.jpg"},
                                        {"reason": "corrupt image", "where": "empty.jpg"}]
    assert p.pairs.images.names == [f"g{i:02d}.jpg" for i in range(20)]
    assert p.pairs.n_pairs == 20 and "a cut photo" not in p.pairs.captions
    assert p.images.shape == (20, 16, 16, 3)
    for i, name in enumerate(p.pairs.images.names):  # each kept row holds its own decoded image
        assert np.array_equal(p.images[i], read_square(str(tmp_path / "data" / name), 16))
    # the same folder read through a Flickr-style layout drops and counts them the same way
    flickr = tmp_path / "flickr"
    os.makedirs(flickr / "images")
    for n in os.listdir(tmp_path / "data"):
        if n.endswith(".jpg"):
            os.link(tmp_path / "data" / n, flickr / "images" / n)
    names = ["half.jpg", "empty.jpg"] + [f"g{i:02d}.jpg" for i in range(20)]
    write(flickr / "captions.tsv", "image\tcaption\n" + "".join(f"{n}\tphoto {n}\n" for n in names))
    write(flickr / "train.txt", "\n".join(names[:-2]) + "\n")
    write(flickr / "test.txt", "\n".join(names[-2:]) + "\n")
    pf = prepare(DataConfig(source="flickr8k", path=str(flickr), image_size=16, max_skip_fraction=0.1), cache_dir)
    assert pf.pairs.skipped == {"corrupt image": 2} and pf.pairs.n_images == 20


def test_more_bad_images_than_allowed_is_an_error_naming_count_and_first_file(tmp_path, cache_dir):
    path = table_with_bad_images(tmp_path)
    with pytest.raises(DataError) as e:  # default data.max_skip_fraction=0.05: 1 of 22 allowed
        prepare(DataConfig(source="csv", path=path, image_size=16), cache_dir)
    msg = str(e.value)
    assert "2 of 22 images cannot be decoded" in msg and "data.max_skip_fraction=0.05" in msg
    assert "first: half.jpg (OSError: image file is truncated" in msg and "empty.jpg (UnidentifiedImageError" in msg


def test_all_training_images_bad_is_an_error(tmp_path, cache_dir):
    write(tmp_path / "half.jpg", noisy_jpeg(1)[:1000])
    write_images(tmp_path, ["t1.jpg", "t2.jpg", "t3.jpg"])
    path = csv_table(tmp_path, [("half.jpg", "the only training photo", "train"), ("t1.jpg", "one", "test"),
                                ("t2.jpg", "two", "test"), ("t3.jpg", "three", "test")])
    with pytest.raises(DataError, match=r"no training pairs left after skipping bad items: \{'corrupt image': 1\}"):
        prepare(DataConfig(source="csv", path=path, image_size=16), cache_dir)


# -- 3. decompression bombs ---------------------------------------------------------------------------
def test_decompression_bomb_is_a_bad_image_not_a_crash(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses images over twice this
    Image.new("RGB", (100, 100), (10, 200, 10)).save(tmp_path / "bomb.png")  # 10 000 px
    Image.new("RGB", (100, 100), (10, 200, 10)).save(tmp_path / "bomb.jpg")
    names = [f"ok{i}.png" for i in range(20)]
    for i, n in enumerate(names):
        write(tmp_path / n, png_bytes(i, size=16))  # 256 px: under the limit
    with pytest.raises(DataError, match=r"bomb\.png: cannot read the image \(Image size \(10000 pixels\) exceeds limit"):
        read_square(str(tmp_path / "bomb.png"), 16)
    with pytest.raises(DataError, match=r"bomb\.jpg: cannot read the image .*decompression bomb"):
        read_square(str(tmp_path / "bomb.jpg"), 16)
    assert read_square(str(tmp_path / "ok0.png"), 16).shape == (16, 16, 3)
    path = csv_table(tmp_path, [("bomb.png", "too many pixels", "train")]
                     + [(n, f"small {i}", "test" if i < 2 else "train") for i, n in enumerate(names)])
    p = prepare(DataConfig(source="csv", path=path, image_size=16), cache_dir)
    assert p.pairs.skipped == {"corrupt image": 1}
    assert p.pairs.skipped_examples == [{"reason": "corrupt image", "where": "bomb.png"}]
    assert p.pairs.images.names == names and p.images.shape == (20, 16, 16, 3)
    # in a webdataset shard (decoded from bytes in memory), too
    shard = write_shard(tmp_path / "s.tar", [("bomb.png", (tmp_path / "bomb.png").read_bytes()), ("bomb.txt", b"big")]
                        + [(f"{k:03d}.{e}", d) for k in range(20)
                           for e, d in (("png", png_bytes(k, size=16)), ("txt", b"small %d" % k))])
    pw = prepare(DataConfig(source="webdataset", path=shard, image_size=16), cache_dir)
    assert pw.pairs.skipped == {"corrupt image": 1} and pw.pairs.n_images == 20
    assert "s.tar/bomb.png" not in pw.pairs.images.names


# -- 4. WebP in webdataset shards -----------------------------------------------------------------------
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


@pytest.mark.skipif(not features.check("webp"), reason="this Pillow has no WebP codec")
def test_webp_in_webdataset_shards_reads_and_decodes(tmp_path, cache_dir):
    def webp(colour, lossless: bool) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (20, 20), colour).save(buf, "WEBP", lossless=lossless, quality=90)
        return buf.getvalue()

    samples = []
    for k, colour in enumerate(COLOURS):
        samples += [(f"{k:05d}.webp", webp(colour, lossless=k % 2 == 0)), (f"{k:05d}.txt", b"colour %d" % k)]
    samples += [("00006.jpg", image_bytes(0)), ("00006.txt", b"a jpeg beside them")]
    shard = write_shard(tmp_path / "00000.tar", samples)
    ps = read_webdataset(shard)
    assert ps.skipped == {} and ps.n_images == 7
    assert ps.images.names[:6] == [f"00000.tar/{k:05d}.webp" for k in range(6)]
    for k, colour in enumerate(COLOURS):
        img = np.asarray(ps.images.open(k, 16))
        assert img.shape == (20, 20, 3)
        assert np.abs(img.astype(int) - colour).max() <= (0 if k % 2 == 0 else 8)
    p = prepare(DataConfig(source="webdataset", path=str(tmp_path), image_size=16), cache_dir)
    assert p.pairs.skipped == {} and p.images.shape == (7, 16, 16, 3)
    for k, colour in enumerate(COLOURS):
        i = p.pairs.images.names.index(f"00000.tar/{k:05d}.webp")
        assert np.abs(p.images[i].astype(int) - colour).max() <= 8


# -- 5. skip counts in the run's data/summary.json ------------------------------------------------------
def test_data_summary_counts_missing_and_corrupt_images(tmp_path, cache_dir):
    data = tmp_path / "data"
    names = [f"p{i:02d}.png" for i in range(24)]
    data.mkdir()
    for i, n in enumerate(names):
        write(data / n, png_bytes(i, size=16))
    write(data / "broken.png", b"\x89PNG\r\n\x1a\n" + b"junk" * 50)
    rows = [("broken.png", "a corrupt image", "train"), ("gone.png", "a missing image", "train")]
    rows += [(n, f"picture {i}", "test" if i < 3 else "train") for i, n in enumerate(names)]
    path = csv_table(data, rows)
    cfg = apply_overrides(RunConfig(), ["data.source=csv", f"data.path={path}", "data.image_size=16",
                                        "model.device=cpu"])
    store = RunStore(str(tmp_path / "runs"))
    run_id = store.create(cfg.to_dict(), name="skips")
    assert run_in_context(store, run_id, lambda ctx: run_pipeline(ctx, until="data")) == 0, \
        store.read_status(run_id)["error"]
    run_dir = tmp_path / "runs" / run_id
    summary = json.loads((run_dir / "data" / "summary.json").read_text())
    assert summary["skipped"] == {"missing image": 1, "corrupt image": 1}
    assert {"reason": "missing image", "where": "pairs.csv line 3: gone.png"} in summary["skipped_examples"]
    assert {"reason": "corrupt image", "where": "broken.png"} in summary["skipped_examples"]
    assert summary["images"] == 24 and summary["pairs"] == 24
    assert json.loads((run_dir / "data" / "pairs.json").read_text())["skipped"] == summary["skipped"]
    events = [e for e in read_jsonl(str(run_dir / "events.jsonl")) if "skipped" in e]
    assert events and events[-1]["skipped"] == 2


# -- 6. path traversal on the app's file route ------------------------------------------------------------
def get(port: int, path: str) -> tuple:
    """(status, body) of a GET sent with exactly this request path (no client-side normalising)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_app_file_route_serves_only_the_runs_folder(tmp_path):
    pytest.importorskip("gradio")
    from app.build import build_app
    from app.context import AppContext
    from app_helpers import free_port

    secret = b"SECRET-OUTSIDE-THE-RUNS-FOLDER"
    write(tmp_path / "secret.txt", secret)
    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    inside = b"a file of a run"
    write(runs / "r1" / "notes.txt", inside)
    os.symlink(tmp_path / "secret.txt", runs / "r1" / "link.txt")   # a link out of the runs folder
    ctx = AppContext(str(runs))
    demo = build_app(ctx)
    port = free_port()
    # as app/__main__.py launches it
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                allowed_paths=[ctx.runs_dir], share=False)
    try:
        route = "/gradio_api/file="
        status, body = get(port, route + urllib.parse.quote(str(runs / "r1" / "notes.txt")))
        assert (status, body) == (200, inside)
        rel_up = os.path.relpath(tmp_path / "secret.txt", os.getcwd())  # relative to the server's folder
        attempts = [
            str(runs) + "/../secret.txt",                       # ../ out of the runs folder
            str(runs) + "/r1/../../secret.txt",
            rel_up,                                             # ../../… from the server's working folder
            "../" * 12 + "etc/passwd",
            "/etc/passwd",                                      # an absolute path elsewhere
            str(tmp_path / "secret.txt"),
            str(runs) + "/..%2fsecret.txt",                     # URL-encoded forms
            str(runs) + "/%2e%2e%2fsecret.txt",
            urllib.parse.quote(str(runs) + "/../secret.txt", safe=""),
            str(runs / "r1" / "link.txt"),                      # a symlink inside pointing outside
        ]
        for attempt in attempts:
            status, body = get(port, route + attempt)  # refused by Gradio's allowed-paths check
            assert status == 403 and b"File not allowed" in body, (attempt, status, body[:200])
            assert secret not in body and b"root:" not in body, attempt
        # the older /file/ route refuses the same paths
        status, body = get(port, "/gradio_api/file/" + str(runs) + "/../secret.txt")
        assert status == 403 and secret not in body
    finally:
        demo.close()
