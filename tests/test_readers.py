"""Readers → PairSet: every format on tiny data made here, every bad input, auto-detection,
and the shared Flickr8k copy (skipped when absent)."""
from __future__ import annotations

import io
import json
import os
import sys
import time
import types

import numpy as np
import pytest
from PIL import Image

from mdw.config import DataConfig
from mdw.data.pairset import FileImages
from mdw.data.readers import hash_split, read_flickr_folder, read_karpathy
from mdw.data.tables import read_table
from mdw.data.sources import describe_source, detect_source, load_source
from mdw.data.webdataset import ShardImages, read_webdataset
from mdw.errors import DataError

from helpers import write_shard

SHARED_FLICKR8K = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "flickr8k")
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def image_bytes(i: int, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), COLOURS[i % len(COLOURS)]).save(buf, format=fmt)
    return buf.getvalue()


def write_images(folder, names):
    os.makedirs(folder, exist_ok=True)
    for i, n in enumerate(names):
        path = os.path.join(folder, n)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(image_bytes(i, "PNG" if n.endswith(".png") else "JPEG"))


def write(path, text: str | bytes):
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode("utf-8"))
    return str(path)


def flickr_folder(tmp_path, rows=None, splits=None):
    """a..e in splits, f in none; two captions each unless `rows` says otherwise."""
    names = [f"{c}.jpg" for c in "abcdef"]
    write_images(tmp_path / "images", names)
    rows = rows if rows is not None else [(n, k, f"photo {n} caption {k}") for n in names for k in range(2)]
    write(tmp_path / "captions.tsv", "image\tcaption_index\tcaption\n" + "".join(f"{n}\t{k}\t{c}\n" for n, k, c in rows))
    splits = splits or {"train.txt": "a.jpg\nb.jpg\nc.jpg\n", "dev.txt": "d.jpg\n", "test.txt": "e.jpg\n"}
    for fname, text in splits.items():
        write(tmp_path / fname, text)
    return str(tmp_path)


def check_shared_index(ps):
    """Each caption's image index is valid and captions of one image share it."""
    assert len(ps.pair_image) == ps.n_pairs and ps.pair_image.max() < ps.n_images
    assert (ps.true_image == ps.pair_image).all()


# -- Flickr8k-style folders ----------------------------------------------------------------------
def test_flickr_folder_counts_and_shared_image_index(tmp_path):
    ps = read_flickr_folder(flickr_folder(tmp_path))
    assert ps.counts() == {"train": {"images": 3, "pairs": 6}, "dev": {"images": 1, "pairs": 2},
                           "test": {"images": 1, "pairs": 2}}
    assert ps.skipped == {"not in a split": 2}
    assert isinstance(ps.images, FileImages)
    a = ps.images.names.index("a.jpg")
    assert [c for c, i in zip(ps.captions, ps.pair_image) if i == a] == ["photo a.jpg caption 0", "photo a.jpg caption 1"]
    check_shared_index(ps)
    assert ps.images.open(a, 8).size == (12, 10)


def test_flickr_original_token_file_and_split_names(tmp_path):
    names = ["1_x.jpg", "2_y.jpg", "3_z.jpg"]
    write_images(tmp_path / "Flicker8k_Dataset", names)
    write(tmp_path / "Flickr8k.token.txt",
          "1_x.jpg#0\tA dog runs .\n1_x.jpg#1\tA dog runs .\n1_x.jpg#1\tA dog runs .\n"
          "2_y.jpg#0\tA cat sits .\n3_z.jpg#0\tA bird flies .\n9_q.jpg.1#0\tnot in the data\n")
    write(tmp_path / "Flickr_8k.trainImages.txt", "1_x.jpg\n")
    write(tmp_path / "Flickr_8k.devImages.txt", "2_y.jpg\n")
    write(tmp_path / "Flickr_8k.testImages.txt", "3_z.jpg\n")
    ps = read_flickr_folder(str(tmp_path), max_skip_fraction=1.0)
    # the same text under two caption ids stays (two annotators); the repeated line is a duplicate
    assert ps.counts()["train"] == {"images": 1, "pairs": 2}
    assert ps.skipped == {"duplicate row": 1, "not in a split": 1}
    assert ps.skipped_examples[0]["where"] == "Flickr8k.token.txt line 3"
    assert read_flickr_folder(str(tmp_path / "Flickr8k.token.txt"), 1.0).n_pairs == 4  # the file itself


def test_flickr_bad_rows_are_skipped_and_counted(tmp_path):
    folder = flickr_folder(tmp_path)
    os.remove(os.path.join(folder, "images", "c.jpg"))
    with open(os.path.join(folder, "captions.tsv"), "ab") as f:
        f.write(b"a.jpg\t2\t   \n")                    # line 14: empty caption
        f.write(b"a.jpg\t3\tbad \xff\xfe bytes\n")      # line 15: invalid UTF-8
        f.write(b"a.jpg no tabs here\n")               # line 16: malformed
        f.write(b"b.jpg\t0\tphoto b.jpg caption 0\n")  # line 17: duplicate of line 4
    ps = read_flickr_folder(folder, max_skip_fraction=1.0)
    assert ps.skipped == {"not in a split": 2, "missing image": 2, "empty caption": 1,
                          "invalid UTF-8": 1, "malformed line": 1, "duplicate row": 1}
    wheres: dict = {}
    for e in ps.skipped_examples:
        wheres.setdefault(e["reason"], e["where"])  # the first example of each reason
    assert wheres["missing image"] == "captions.tsv line 6: c.jpg"
    assert wheres["empty caption"] == "captions.tsv line 14"
    assert wheres["invalid UTF-8"] == "captions.tsv line 15"
    assert wheres["malformed line"] == "captions.tsv line 16"
    assert wheres["duplicate row"] == "captions.tsv line 17"
    assert ps.counts()["train"] == {"images": 2, "pairs": 4}
    # the default 5 % limit turns the same folder into an error that names counts and examples
    with pytest.raises(DataError, match=r"6 of 16 rows skipped.*missing image: 2.*captions.tsv line 6"):
        read_flickr_folder(folder)


def test_flickr_wrong_image_folder_is_an_error_not_an_empty_set(tmp_path):
    folder = flickr_folder(tmp_path)
    for n in os.listdir(os.path.join(folder, "images")):
        os.remove(os.path.join(folder, "images", n))
    with pytest.raises(DataError, match=r"no usable image-caption pairs.*missing image: 10.*looked up under"):
        read_flickr_folder(folder)


def test_flickr_split_image_without_captions_is_counted(tmp_path):
    folder = flickr_folder(tmp_path, splits={"train.txt": "a.jpg\nb.jpg\nzz.jpg\n", "test.txt": "e.jpg\n"})
    ps = read_flickr_folder(folder, max_skip_fraction=1.0)
    assert ps.skipped["image without captions"] == 1
    assert {"reason": "image without captions", "where": "train.txt line 3: zz.jpg"} in ps.skipped_examples
    assert ps.counts()["dev"] == {"images": 0, "pairs": 0}


@pytest.mark.parametrize("case, message", [
    ("missing", "folder not found"),
    ("no_captions", "no captions file (looked for captions.tsv, Flickr8k.token.txt)"),
    ("no_images", "no image folder"),
    ("no_splits", "no split files (looked for train.txt, Flickr_8k.trainImages.txt"),
    ("two_splits", "dev.txt line 2: image a.jpg is also listed in train.txt line 1"),
    ("bad_header", "captions.tsv: needs a tab-separated header with columns image and caption"),
    ("binary", "captions.tsv: not a UTF-8 text file"),
])
def test_flickr_folder_errors(tmp_path, case, message):
    folder = flickr_folder(tmp_path / "f")
    if case == "missing":
        folder = str(tmp_path / "nope")
    elif case == "no_captions":
        os.remove(os.path.join(folder, "captions.tsv"))
    elif case == "no_images":
        os.rename(os.path.join(folder, "images"), os.path.join(folder, "pics"))
    elif case == "no_splits":
        for n in ("train.txt", "dev.txt", "test.txt"):
            os.remove(os.path.join(folder, n))
    elif case == "two_splits":
        write(os.path.join(folder, "dev.txt"), "d.jpg\na.jpg\n")
    elif case == "bad_header":
        write(os.path.join(folder, "captions.tsv"), "a.jpg\t0\ta photo\n")
    elif case == "binary":
        write(os.path.join(folder, "captions.tsv"), b"\xff\xfei\x00m\x00")
    with pytest.raises(DataError) as e:
        read_flickr_folder(folder)
    assert message in str(e.value)


def test_shared_flickr8k_copy_loads_with_the_official_split_sizes():
    if not os.path.isdir(SHARED_FLICKR8K):
        pytest.skip(f"the team Flickr8k copy is not at {SHARED_FLICKR8K}")
    t0 = time.perf_counter()
    ps = load_source(describe_source(SHARED_FLICKR8K))
    seconds = time.perf_counter() - t0
    print(f"\nFlickr8k loaded in {seconds:.2f} s")
    assert ps.counts() == {"train": {"images": 6000, "pairs": 30000}, "dev": {"images": 1000, "pairs": 5000},
                           "test": {"images": 1000, "pairs": 5000}}
    assert ps.skipped == {"not in a split": 455}        # the 91 images of no official split
    assert (np.bincount(ps.pair_image) == 5).all()       # five captions an image, sharing its index
    check_shared_index(ps)


# -- Karpathy JSON ---------------------------------------------------------------------------------
def karpathy(tmp_path, images=None, make=True):
    images = images if images is not None else [
        {"filepath": "train2014", "filename": "a.jpg", "split": "train",
         "sentences": [{"raw": "A red thing.", "sentid": 0}, {"tokens": ["a", "red", "box"], "sentid": 1}]},
        {"filepath": "val2014", "filename": "b.jpg", "split": "restval", "sentences": [{"raw": "A green thing."}]},
        {"filepath": "val2014", "filename": "c.jpg", "split": "val", "sentences": [{"raw": "A blue thing."}]},
        {"filepath": "val2014", "filename": "d.jpg", "split": "test", "sentences": [{"raw": "A yellow thing."}]},
    ]
    if make:
        write_images(tmp_path / "coco", ["train2014/a.jpg", "val2014/b.jpg", "val2014/c.jpg", "val2014/d.jpg"])
    return write(tmp_path / "dataset_coco.json", json.dumps({"images": images, "dataset": "coco"}))


def test_karpathy_json_reads_splits_and_paths(tmp_path):
    ps = read_karpathy(karpathy(tmp_path), str(tmp_path / "coco"))
    assert ps.counts() == {"train": {"images": 2, "pairs": 3}, "dev": {"images": 1, "pairs": 1},
                           "test": {"images": 1, "pairs": 1}}
    assert ps.captions[:2] == ["A red thing.", "a red box"] and list(ps.pair_image[:2]) == [0, 0]
    assert ps.images.names[0] == os.path.join("train2014", "a.jpg")
    assert os.path.isfile(ps.images.path(3))


def test_karpathy_missing_images_and_empty_captions_are_counted(tmp_path):
    path = karpathy(tmp_path)
    os.remove(tmp_path / "coco" / "val2014" / "b.jpg")
    data = json.load(open(path))
    data["images"][0]["sentences"].append({"raw": "  "})
    write(path, json.dumps(data))
    ps = read_karpathy(path, str(tmp_path / "coco"), max_skip_fraction=1.0)
    assert ps.skipped == {"missing image": 1, "empty caption": 1}
    assert ps.skipped_examples == [
        {"reason": "empty caption", "where": "dataset_coco.json images[0].sentences[2]"},
        {"reason": "missing image", "where": f"dataset_coco.json images[1].sentences[0]: {os.path.join('val2014', 'b.jpg')}"}]
    with pytest.raises(DataError, match="looked up under"):  # no image root: none of the images is found
        read_karpathy(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("images"), 'expected an object with an "images" list (Karpathy format); found: dataset'),
    (lambda d: d["images"][1].pop("filename"), "dataset_coco.json images[1].filename: missing"),
    (lambda d: d["images"][3].pop("sentences"), "dataset_coco.json images[3].sentences: missing or not a list"),
    (lambda d: d["images"][2].update(split="holdout"), "images[2].split: unknown split 'holdout'"),
    (lambda d: d["images"][0].pop("split"), "images[0].split: missing"),
    (lambda d: d["images"][0]["sentences"].append({"text": "x"}), 'images[0].sentences[2]: needs "raw" text or a "tokens" list'),
    (lambda d: d["images"].append("e.jpg"), "images[4]: expected an object, got str"),
])
def test_karpathy_wrong_shape_names_the_json_path(tmp_path, edit, message):
    path = karpathy(tmp_path)
    data = json.load(open(path))
    edit(data)
    write(path, json.dumps(data))
    with pytest.raises(DataError) as e:
        read_karpathy(path, str(tmp_path / "coco"))
    assert message in str(e.value)


def test_karpathy_invalid_json_and_missing_file(tmp_path):
    bad = write(tmp_path / "d.json", '{"images": [\n  {"filename": }\n]}')
    with pytest.raises(DataError, match=r"d.json: not valid JSON \(line 2"):
        read_karpathy(bad)
    with pytest.raises(DataError, match="nope.json: file not found"):
        read_karpathy(str(tmp_path / "nope.json"))


# -- CSV / TSV / JSONL ------------------------------------------------------------------------------
def test_csv_with_split_column_shares_image_entries(tmp_path):
    write_images(tmp_path / "pics", ["a.jpg", "b.png", "c.jpg", "d.jpg"])
    path = write(tmp_path / "data.csv", 'filepath,text,split\npics/a.jpg,"a red, red thing",train\n'
                 "pics/a.jpg,another caption of a,train\n./pics/b.png,green,val\npics/c.jpg,blue,test\n"
                 "pics/d.jpg,yellow,TRAIN\n")
    ps = read_table(path)
    assert ps.counts() == {"train": {"images": 2, "pairs": 3}, "dev": {"images": 1, "pairs": 1},
                           "test": {"images": 1, "pairs": 1}}
    assert ps.n_images == 4 and list(ps.pair_image) == [0, 0, 1, 2, 3]
    assert ps.captions[0] == "a red, red thing" and ps.images.names[1] == os.path.join("pics", "b.png")
    assert ps.images.root == str(tmp_path)                     # relative to the table's folder
    ps2 = read_table(write(tmp_path / "t.csv", "image,caption\na.jpg,x\n"), image_root=str(tmp_path / "pics"))
    assert os.path.isfile(ps2.images.path(0))                  # or to image_root


def test_table_without_split_column_splits_by_image_hash(tmp_path):
    names = [f"img{i:03d}.jpg" for i in range(60)]
    write_images(tmp_path, names)
    path = write(tmp_path / "data.tsv", "image\ttitle\n" + "".join(f'{n}\ta "quoted" caption {n}\n' for n in names))
    ps = read_table(path)
    assert ps.n_images == 60 and ps.captions[0] == 'a "quoted" caption img000.jpg'
    assert list(ps.image_split) == [hash_split(n) for n in ps.images.names]
    assert set(ps.image_split) <= {"train", "dev", "test"} and (ps.image_split == "train").sum() > 40
    assert list(read_table(path).image_split) == list(ps.image_split)  # deterministic


def test_jsonl_reads_objects_and_counts_bad_lines(tmp_path):
    write_images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    lines = [{"image": "a.jpg", "caption": "one", "split": "train"}, {"image": "a.jpg", "caption": "two", "split": "train"},
             {"image": "b.jpg", "caption": "three", "split": "dev"}, {"image": "c.jpg", "caption": "four", "split": "test"}]
    text = "\n".join(json.dumps(x) for x in lines) + '\n\n["not", "an object"]\n{"image": "c.jpg", "capt'
    ps = read_table(write(tmp_path / "d.jsonl", text), max_skip_fraction=1.0)
    assert ps.counts()["train"] == {"images": 1, "pairs": 2} and ps.n_pairs == 4
    assert ps.skipped == {"not a JSON object": 2}
    assert ps.skipped_examples[0]["where"] == "d.jsonl line 6"
    with pytest.raises(DataError, match=r"d.jsonl line 1: needs columns image and caption; found: img, text_en"):
        read_table(write(tmp_path / "d.jsonl", '{"img": "a.jpg", "text_en": "x"}\n'))


def test_table_bad_rows_are_skipped_and_counted(tmp_path):
    write_images(tmp_path, ["a.jpg", "b.jpg"])
    path = write(tmp_path / "captions.csv",
                 b"image,caption\na.jpg,fine\na.jpg,other\nb.jpg,good\nb.jpg,also good\na.jpg,more\n"
                 b"a.jpg,   \n"            # line 7: empty caption
                 b"a.jpg,fine\n"           # line 8: duplicate of line 2
                 b"gone.jpg,lost\n"        # line 9: missing image
                 b"b.jpg,caf\xe9\n"        # line 10: invalid UTF-8 (latin-1)
                 b"b.jpg\n"                # line 11: too few fields
                 b",no image\n")           # line 12: no image path
    ps = read_table(path, max_skip_fraction=1.0)
    assert ps.n_pairs == 5
    assert ps.skipped == {"empty caption": 1, "duplicate row": 1, "missing image": 1, "invalid UTF-8": 1,
                          "malformed line": 1, "no image path": 1}
    assert [e["where"] for e in ps.skipped_examples] == [
        "captions.csv line 7", "captions.csv line 8", "captions.csv line 9: gone.jpg", "captions.csv line 10",
        "captions.csv line 11", "captions.csv line 12"]
    with pytest.raises(DataError, match=r"captions.csv.*6 of 11 rows skipped.*captions.csv line 7 \(empty caption\)"):
        read_table(path)


@pytest.mark.parametrize("text, message", [
    ("img,text_en\na.jpg,x\n", "data.csv: needs columns image and caption; found: img, text_en"),
    ("", "data.csv: needs columns image and caption; found: nothing"),
    ("image,caption,split\na.jpg,x,train\na.jpg,y,holdout\n", "data.csv line 3: split: unknown split 'holdout'"),
    ("image,caption,split\na.jpg,x,train\na.jpg,y,test\n", "data.csv line 3: image a.jpg is in split 'test' here but in 'train' at data.csv line 2"),
    ("url,caption\nhttps://x.org/a.jpg,x\n", "data.csv line 2: image 'https://x.org/a.jpg' is a URL"),
    ('image,caption\na.jpg,"open quote\n', "data.csv line 2: not valid CSV"),
])
def test_table_errors_name_file_and_line(tmp_path, text, message):
    write_images(tmp_path, ["a.jpg"])
    with pytest.raises(DataError) as e:
        read_table(write(tmp_path / "data.csv", text))
    assert message in str(e.value)


# -- webdataset shards ------------------------------------------------------------------------------
def shards(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_shard(folder / "00001.tar", [
        ("00010.jpg", image_bytes(0)), ("00010.txt", b"a red square"), ("00010.json", b'{"caption": "ignored"}'),
        ("00011.png", image_bytes(1, "PNG")), ("00011.json", b'{"caption": "a green square"}'),
        ("00012.txt", b"caption without image"),
        ("00013.jpg", image_bytes(2)), ("00013.txt", b"   "),
        ("00014.jpg", image_bytes(3)), ("00014.txt", b"caf\xe9"),
    ])
    write_shard(folder / "00000.tar", [(f"{k:05d}.{e}", d) for k in range(8)
                                       for e, d in (("jpg", image_bytes(k)), ("txt", f"caption {k}".encode()))]
                + [("00008.jpg", b"not really a jpeg"), ("00008.txt", b"corrupt image, read later")])
    write(folder / "00000_stats.json", "{}")
    return folder


def test_webdataset_folder_groups_members_by_key(tmp_path):
    ps = read_webdataset(str(shards(tmp_path)), max_skip_fraction=1.0)
    assert isinstance(ps.images, ShardImages)    # captions read; images fetched from the shards on open
    assert ps.n_images == ps.n_pairs == 11 and ps.captions[0] == "caption 0"      # sorted shard order
    assert ps.images.names[9:] == ["00001.tar/00010.jpg", "00001.tar/00011.png"]
    assert ps.captions[9:] == ["a red square", "a green square"]
    by_hash = [hash_split(n.split("/")[1].split(".")[0]) for n in ps.images.names]
    moved = [i for i, (a, b) in enumerate(zip(ps.image_split, by_hash)) if a != b]
    assert len(moved) <= 2 and all(by_hash[i] == "train" for i in moved)   # filled an empty test / dev split
    assert {"train", "dev", "test"} <= set(ps.image_split)
    assert ps.skipped == {"no image": 1, "empty caption": 1, "invalid UTF-8": 1}
    assert {"reason": "no image", "where": "00001.tar:00012"} in ps.skipped_examples
    assert ps.images.open(10, 8).size == (12, 10)
    with pytest.raises(Exception):
        ps.images.open(8, 8)  # the corrupt image passes through; decoding finds it later


def test_webdataset_single_shard_glob_and_errors(tmp_path):
    folder = shards(tmp_path)
    assert read_webdataset(str(folder / "00000.tar")).n_pairs == 9
    assert read_webdataset(str(folder / "0000[01].tar"), 1.0).n_pairs == 11
    with pytest.raises(DataError, match="3 of 14 rows skipped"):
        read_webdataset(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="x.tar: not a readable tar archive"):
        read_webdataset(write(tmp_path / "x.tar", "just text"))
    with pytest.raises(DataError, match="no webdataset shards in this folder"):
        read_webdataset(str(folder / ".." / "empty"))
    with pytest.raises(DataError, match="no files match"):
        read_webdataset(str(folder / "*.tgz"))


def test_webdataset_truncated_shard_keeps_what_was_read(tmp_path):
    path = write_shard(tmp_path / "s.tar", [(f"{k:03d}.{e}", d) for k in range(20)
                                            for e, d in (("jpg", image_bytes(k)), ("txt", b"a caption %d" % k))])
    data = open(path, "rb").read()
    write(path, data[: len(data) // 2 + 100])
    ps = read_webdataset(path, max_skip_fraction=1.0)
    assert 5 < ps.n_pairs < 20 and ps.skipped.get("truncated shard") == 1


# -- dispatch and auto-detection --------------------------------------------------------------------
def test_auto_detection_of_every_kind(tmp_path):
    flickr = flickr_folder(tmp_path / "flickr")
    assert detect_source(flickr) == "flickr8k"
    assert detect_source(os.path.join(flickr, "captions.tsv")) == "flickr8k"
    assert detect_source(karpathy(tmp_path)) == "karpathy"
    assert detect_source(write(tmp_path / "t.csv", "image,caption\n")) == "csv"
    assert detect_source(write(tmp_path / "t.tsv", "image\tcaption\n")) == "csv"
    assert detect_source(write(tmp_path / "t.jsonl", "{}\n")) == "jsonl"
    folder = shards(tmp_path)
    assert detect_source(str(folder)) == "webdataset"
    assert detect_source(str(folder / "00000.tar")) == "webdataset"
    assert detect_source(str(folder / "*.tar")) == "webdataset"
    ps = load_source(DataConfig(source="auto", path=str(tmp_path / "dataset_coco.json"), image_root=str(tmp_path / "coco")))
    assert ps.n_pairs == 5 and ps.name.startswith("karpathy:")
    assert load_source(describe_source(flickr)).n_pairs == 10
    assert load_source(DataConfig(source="webdataset", path=str(folder), max_skip_fraction=1.0)).n_pairs == 11


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p), "cannot tell what data this folder holds; looked for a folder with captions.tsv"),
    (lambda p: str(p / "nope"), "nope: not found"),
    (lambda p: write(p / "x.json", '{"annotations": []}'), 'x.json: a .json source must be a Karpathy-style object'),
    (lambda p: write(p / "x.parquet", "PAR1"), "x.parquet: cannot tell the format from its name; looked for"),
])
def test_auto_detection_errors(tmp_path, make, message):
    with pytest.raises(DataError) as e:
        load_source(DataConfig(source="auto", path=make(tmp_path)))
    assert message in str(e.value)


def test_describe_source_and_scenes_dispatch(monkeypatch):
    assert describe_source("scenes").source == "scenes"
    cfg = describe_source("some/data.csv", image_root="imgs")
    assert (cfg.source, cfg.path, cfg.image_root) == ("auto", "some/data.csv", "imgs")
    assert (describe_source("jsonl:x.txt").source, describe_source("jsonl:x.txt").path) == ("jsonl", "x.txt")
    fake = types.ModuleType("mdw.data.scenes")
    fake.make_scenes = lambda scenes_cfg: ("scenes", scenes_cfg.seed)
    monkeypatch.setitem(sys.modules, "mdw.data.scenes", fake)
    assert load_source(DataConfig(source="scenes")) == ("scenes", 0)


def test_csv_multiline_caption_is_one_row_named_by_its_first_line(tmp_path):
    write_images(tmp_path, ["a.jpg"])
    path = write(tmp_path / "m.csv", 'image,caption\na.jpg,"two\nlines"\na.jpg,""\n')
    ps = read_table(path, max_skip_fraction=1.0)
    assert ps.captions == ["two lines"]
    assert ps.skipped_examples == [{"reason": "empty caption", "where": "m.csv line 4"}]
