"""Readers → PairSet: Flickr8k-style folders, Karpathy JSON, auto-detection, and the shared
Flickr8k copy (skipped when absent). Tables and webdataset shards: test_readers_tables.py."""
from __future__ import annotations

import json
import os
import sys
import time
import types

import numpy as np
import pytest

from mdw.config import DataConfig
from mdw.data.pairset import FileImages
from mdw.data.readers import read_flickr_folder, read_karpathy
from mdw.data.sources import describe_source, detect_source, load_source
from mdw.errors import DataError

from helpers import SHARED_FLICKR8K, flickr_folder, karpathy, shards, write, write_images
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
