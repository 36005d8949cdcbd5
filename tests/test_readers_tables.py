"""Readers → PairSet for tables (CSV / TSV / JSONL) and webdataset shards: tiny data made here,
every bad input skipped and counted or named by file and line."""
from __future__ import annotations

import json
import os

import pytest

from mdw.data.readers import hash_split
from mdw.data.tables import read_table
from mdw.data.webdataset import ShardImages, read_webdataset
from mdw.errors import DataError

from helpers import image_bytes, shards, write, write_images, write_shard


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


def test_csv_multiline_caption_is_one_row_named_by_its_first_line(tmp_path):
    write_images(tmp_path, ["a.jpg"])
    path = write(tmp_path / "m.csv", 'image,caption\na.jpg,"two\nlines"\na.jpg,""\n')
    ps = read_table(path, max_skip_fraction=1.0)
    assert ps.captions == ["two lines"]
    assert ps.skipped_examples == [{"reason": "empty caption", "where": "m.csv line 4"}]
