"""Text longer than the encoder's context is cut, and the product says so (mdw/models/text_context.py):
"the first N of M words" in heatmaps (and `heatmap --word` beyond the context), scoring and the
data summary. Captions are generated in the tests."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from mdw.models.text_context import TextFit, preset_context, words_that_fit

VOCAB = "red blue green circle square triangle above below left right small large".split()
LAST = "zebra"   # the 481st word: not among the first 480


def long_caption(n_words: int = 481) -> str:
    """Single-token words (each one WordPiece and one BPE token), the last one "zebra"."""
    rng = np.random.default_rng(0)
    return " ".join([str(w) for w in rng.choice(VOCAB, n_words - 1)] + [LAST])


def test_words_that_fit_counts_whole_words():
    assert words_that_fit([1, 1, 1], 3) == 3
    assert words_that_fit([1, 2, 1], 2) == 1          # the second word would be cut in the middle
    assert words_that_fit([], 5) == 0
    assert words_that_fit([0, 4, 1], 4) == 2
    assert TextFit(126, 481).cut and not TextFit(3, 3).cut
    assert TextFit(126, 481).describe() == "the first 126 of 481 words are encoded"


def test_minilm_and_clip_contexts_in_words():
    cap = long_caption()
    minilm = preset_context("cpu-small")
    assert minilm.budget == 126                                  # 128 tokens, [CLS] and [SEP] included
    fits = minilm.fit([cap, "a red circle above a blue square", ""])
    assert fits == [TextFit(126, 481), TextFit(7, 7), TextFit(0, 0)]
    # a word of several pieces that would be cut in the middle does not count
    assert minilm.fit([" ".join(["red"] * 125 + ["riverbank's"])]) == [TextFit(125, 126)]
    clip = preset_context("ViT-B-32")
    assert clip.budget == 75 and clip.fit([cap]) == [TextFit(75, 481)]


def test_the_count_matches_what_the_encoder_reads():
    from mdw.models.text import FrozenTextEncoder, merge_wordpieces
    enc = FrozenTextEncoder(embed_dim=16)
    cap = long_caption()
    tf = enc.token_features([cap])[0]
    assert len(merge_wordpieces(tf.tokens)) == enc.text_context().fit([cap])[0].encoded == 126


# -- the data summary -------------------------------------------------------------------------------
def test_data_summary_counts_truncated_captions(tmp_path, cache_dir):
    from mdw.config import RunConfig, apply_overrides
    from mdw.pipeline import stage_data
    from mdw.runs.context import run_in_context
    from mdw.runs.store import RunStore

    rows = [["image", "caption", "split"]]
    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
        rows.append([f"{i}.png", long_caption() if i < 2 else f"a red square number {i}", "test" if i == 5 else "train"])
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    cfg = apply_overrides(RunConfig(), ["data.source=csv", f"data.path={tmp_path / 'pairs.csv'}", "data.image_size=16"])
    store = RunStore(str(tmp_path / "runs"))
    run_id = store.create(cfg.to_dict(), name="long")

    def body(ctx):
        with ctx.stage("data"):
            stage_data(ctx, cfg, lambda f, m="": None)

    assert run_in_context(store, run_id, body) == 0, store.read_status(run_id)["error"]
    summary = json.loads((tmp_path / "runs" / run_id / "data" / "summary.json").read_text())
    text = summary["text_context"]
    assert text["truncated_captions"] == 2 and text["captions"] == 6 and text["context_tokens"] == 126
    assert text["longest_words"] == 481 and text["examples"][0]["words_encoded"] == 126
    assert "2 of 6 captions are longer than the text encoder's context (126 tokens)" in store.log_tail(run_id)


# -- heatmaps and scoring on a tiny run ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from helpers import tiny_run_dir
    return tiny_run_dir(tmp_path_factory)


def test_heatmaps_say_how_much_of_the_caption_was_read(tiny, tmp_path, capsys):
    from mdw.cli.main import main
    from mdw.heatmaps.compute import CamOptions, word_maps
    from mdw.train.experts_io import load_expert

    run_dir, cfg = tiny
    model = load_expert(run_dir, "dtcl", "A")
    image = np.zeros((1, cfg.data.image_size, cfg.data.image_size, 3), np.uint8)
    cap = long_caption()
    long, short = word_maps(model, image[[0, 0]], [cap, "a red circle"], cam=CamOptions(shifts=1, flip=False))
    assert (long.words_encoded, long.words_total) == (126, 481) and long.cut
    assert len(long.words) == len(long.maps) == 126 and max(long.positions) == 125
    assert "the first 126 of 481 words are encoded" in long.cut_note()
    assert long.beyond_context(LAST) and not long.beyond_context(cap.split()[0]) and not long.beyond_context("dog")
    assert not short.cut and short.cut_note() == "" and (short.words_encoded, short.words_total) == (3, 3)

    Image.fromarray(image[0]).save(tmp_path / "img.png")
    args = ["heatmap", "--run", run_dir, "--image", str(tmp_path / "img.png"), "--caption", cap,
            "--out", str(tmp_path / "h.png"), "--shifts", "1"]
    capsys.readouterr()
    assert main(args + ["--word", LAST]) == 2
    assert (f"--word '{LAST}' is beyond the text encoder's context (the first 126 of 481 words are encoded)"
            in capsys.readouterr().err)
    assert main(args + ["--word", "dog"]) == 2
    assert "is not among the caption's words" in capsys.readouterr().err
    assert main(args + ["--word", cap.split()[0]]) == 0
    assert "note: the caption is longer than the text encoder's context: the first 126 of 481" in capsys.readouterr().out


def test_scoring_reports_cut_captions(tiny, tmp_path, capsys):
    from mdw.cli.main import main
    from mdw.train.score import score_pairs

    run_dir, cfg = tiny
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "a.png")
    cap = long_caption()
    s = score_pairs(run_dir, [str(tmp_path / "a.png")] * 2, [cap, "a red square"])
    assert s["words_encoded"].tolist() == [126, 3] and s["words_total"].tolist() == [481, 3]
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "caption"], ["a.png", cap], ["a.png", "a red square"]])
    out = tmp_path / "scored.csv"
    capsys.readouterr()
    assert main(["score", "--run", run_dir, "--pairs", str(tmp_path / "pairs.csv"), "--out", str(out)]) == 0
    assert "1 of 2 captions are longer than the text encoder's context" in capsys.readouterr().out
    got = list(csv.DictReader(out.open()))
    assert [(r["words_encoded"], r["words_total"]) for r in got] == [("126", "481"), ("3", "3")]


def test_stored_heatmaps_keep_the_cut_and_the_app_says_it(tiny, tmp_path):
    """The maps the app shows (stored in heatmaps/) keep N of M, and both heatmap views say it."""
    import shutil

    from app.context import AppContext
    from app.tab_correspondence import show_item
    from mdw.heatmaps.compute import CamOptions, word_maps
    from mdw.heatmaps.store import append_items, pack
    from mdw.runs.view import RunView
    from mdw.train.experts_io import load_expert

    run_dir, cfg = tiny
    runs = tmp_path / "runs"
    copy = shutil.copytree(run_dir, runs / os.path.basename(run_dir))
    model = load_expert(str(copy), "dtcl", "A")
    image = np.zeros((2, cfg.data.image_size, cfg.data.image_size, 3), np.uint8)
    wms = word_maps(model, image, [long_caption(), "a red circle"], cam=CamOptions(shifts=1, flip=False))
    stored = append_items(str(copy), pack("app", [900, 901], image, wms))
    rows = [int(r) for r in np.flatnonzero(stored["group"] == "app")]
    long, short = (RunView(str(copy)).heatmap_item(r).maps for r in rows)
    assert (long.words_encoded, long.words_total) == (126, 481) and long.cut and not short.cut
    _, note = show_item(AppContext(str(runs)), os.path.basename(run_dir), rows[0])
    assert "the first 126 of 481 words are encoded" in note
    _, note = show_item(AppContext(str(runs)), os.path.basename(run_dir), rows[1])
    assert "words are encoded" not in note
