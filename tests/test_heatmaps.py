"""Grad-CAM and region-word heatmaps: maps, word merging, a planted model, overlays, the stage, the CLI."""
import io
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from mdw.config import ModelConfig, RunConfig, apply_overrides
from mdw.heatmaps.compute import align_to_split, word_maps
from mdw.heatmaps.render import colourise, label_tiles, overlay, png_bytes, word_grid
from mdw.heatmaps.stage import select_trusted
from mdw.heatmaps.store import append_items, load_item, load_packed, pack
from mdw.models.gradcam import gradcam, gradcam_with_scores
from mdw.models.model import MDWModel
from mdw.models.presets import build_model
from mdw.models.text import FrozenTextEncoder
from mdw.models.towers import Normalize

from helpers import PLANTED_CAPTION, planted_image

TINY_RN = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(device="cpu"), image_size=32, seed=0)


# -- Grad-CAM ---------------------------------------------------------------------------------------
def test_gradcam_shapes_range_and_no_side_effects(model):
    model.train()
    x = torch.rand(3, 3, 32, 32)
    t = F.normalize(torch.randn(3, 4, model.embed_dim), dim=-1)
    t[1, 2] = 0.0  # a padded (zero) text: an all-zero map
    maps, s = gradcam_with_scores(model, x, t)
    assert maps.shape == (3, 4, 32, 32) and s.shape == (3, 4)
    assert maps.min() >= 0 and maps.max() <= 1 and not maps.requires_grad
    assert torch.all(maps[1, 2] == 0) and s[1, 2] == 0
    for n in range(3):
        for k in range(4):
            assert maps[n, k].max() in (0.0, 1.0)
    # the scores are the cosine similarities, computed in eval mode; the mode is restored
    model.eval()
    with torch.no_grad():
        ref = torch.einsum("nd,nkd->nk", model.encode_image(x), t)
    assert torch.allclose(s, ref, atol=1e-5)
    model.train()
    gradcam(model, x, t, out_size=48)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert gradcam(model, x, t, out_size=48).shape == (3, 4, 48, 48)
    assert gradcam(model, x, t[:, :0]).shape == (3, 0, 32, 32)
    # batched maps equal one-at-a-time maps (eval mode: the images do not interact)
    one = gradcam(model, x[2:], t[2:])
    assert torch.allclose(one, gradcam(model, x, t)[2:], atol=1e-5)
    model.eval()


def test_gradcam_create_graph_is_differentiable_wrt_pixels(model):
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    t = F.normalize(torch.randn(2, 2, model.embed_dim), dim=-1)
    maps = gradcam(model, x, t, create_graph=True)
    assert maps.requires_grad
    (g,) = torch.autograd.grad(maps.sum(), x)
    assert g.shape == x.shape and torch.isfinite(g).all()
    assert all(p.grad is None for p in model.parameters())


def test_planted_model_map_peaks_in_the_region(planted):
    img = planted_image()
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    t = torch.eye(3)[None, :2]                       # R axis, G axis
    maps = gradcam(planted, x, t)[0]
    for k, (r0, c0) in enumerate(((0, 0), (24, 16))):
        y, xx = np.unravel_index(int(maps[k].argmax()), (32, 32))
        assert r0 <= y < r0 + 8 and c0 <= xx < c0 + 8, (k, y, xx)
        inside = maps[k, r0:r0 + 8, c0:c0 + 8].mean()
        assert inside > 0.6 and maps[k].mean() < 0.2
    # end to end through the words of a caption: "red" points at the red cell, "green" at the green one
    wm = word_maps(planted, img[None], [PLANTED_CAPTION])[0]
    assert wm.words == ["A", "red", "square", "and", "a", "green", "square"]
    assert wm.positions == [0, 1, 2, 3, 4, 5, 6]
    red, green = wm.maps[wm.word_index("red")], wm.maps[wm.word_index("green")]
    assert np.unravel_index(int(red.argmax()), red.shape)[0] < 8
    yg, xg = np.unravel_index(int(green.argmax()), green.shape)
    assert yg >= 24 and 16 <= xg < 24
    assert wm.scores[wm.word_index("red")] > 0.5 and wm.scores[wm.word_index("green")] > 0.5


class TwoScaleTower(nn.Module):
    """Parameter-free: `fine` averages 4x4 pixel cells (8x8 map at 32 px), the last map 8x8 cells."""
    output_dim = 3

    def __init__(self):
        super().__init__()
        self.fine = nn.AvgPool2d(4)
        self.coarse = nn.AvgPool2d(2)

    def forward_with_features(self, x):
        feats = self.coarse(self.fine(x))
        return feats.mean((2, 3)), feats

    def forward_features(self, x):
        return self.forward_with_features(x)[1]

    def forward(self, x):
        return self.forward_with_features(x)[0]


@pytest.mark.parametrize("weighting", ["grad", "layer"])
def test_an_earlier_finer_layer_resolves_a_region_the_last_map_cannot(weighting):
    """A red 4x4 patch in the corner quarter of an 8x8 cell: the last map can only point at its
    cell's centre (outside the patch); the finer layer points inside it."""
    text = FrozenTextEncoder(embed_dim=3, proj_type="linear")
    m = MDWModel(TwoScaleTower(), text, Normalize((0, 0, 0), (1, 1, 1)), "two-scale", 32).eval()
    img = np.full((32, 32, 3), 0.05)
    img[12:16, 20:24] = (1.0, 0.05, 0.05)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    red = torch.eye(3)[None, :1]
    fine = gradcam(m, x, red, layer="fine", weighting=weighting)[0, 0]
    y, xx = np.unravel_index(int(fine.argmax()), (32, 32))
    assert 12 <= y < 16 and 20 <= xx < 24, (y, xx)
    assert fine[12:16, 20:24].mean() > 0.6 and fine.mean() < 0.1
    coarse = gradcam(m, x, red, weighting=weighting)[0, 0]   # the last map: the 8x8 cell (8:16, 16:24)
    y, xx = np.unravel_index(int(coarse.argmax()), (32, 32))
    assert not (12 <= y < 16 and 20 <= xx < 24) and 8 <= y < 16 and 16 <= xx < 24
    with pytest.raises(ValueError, match="no layer"):
        gradcam(m, x, red, layer="stages.9")


# -- words ------------------------------------------------------------------------------------------
def test_align_to_split():
    cap = "One shape: a Café's naïve-test, don't"
    pieces = ["one", "shape", ":", "a", "cafe", "'", "s", "naive", "-", "test", ",", "don", "'", "t"]
    assert align_to_split(pieces, cap) == [0, 1, -1, 2, 3, -1, 3, 4, -1, 4, -1, 5, -1, 5]
    assert align_to_split(["zzz", "a"], "a") == [-1, 0]  # a piece not in the caption is not aligned


def test_wordpiece_words_in_heatmaps(model):
    caps = ["A playhouse, by the riverbank!", "one shape: a red circle", "??"]
    x = torch.rand(3, 3, 32, 32)
    wms = word_maps(model, x, caps, batch_size=2)
    assert any(t.startswith("##") for t in model.text.token_features(caps[:1])[0].tokens)  # word pieces
    assert wms[0].words == ["A", "playhouse", "by", "the", "riverbank"] and wms[0].positions == [0, 1, 2, 3, 4]
    assert wms[1].words == ["one", "shape", "a", "red", "circle"] and wms[1].positions == [0, 1, 2, 3, 4]
    assert wms[2].words == [] and wms[2].maps.shape == (0, 32, 32)
    for wm in wms[:2]:
        assert wm.maps.shape == (len(wm.words), 32, 32) and wm.maps.dtype == np.float32
        assert wm.maps.min() >= 0 and wm.maps.max() <= 1 and wm.scores.shape == (len(wm.words),)
        assert wm.sentence_map.shape == (32, 32) and -1 <= wm.pair_score <= 1
    # one image shown with several captions (distilled pairs: decoded nearest captions)
    two = word_maps(model, x[:1], caps[:2], image_of=[0, 0])
    assert np.allclose(two[0].maps, word_maps(model, x[:1], caps[:1])[0].maps, atol=1e-5)


def test_bpe_words_in_heatmaps(tmp_path):
    import open_clip
    (tmp_path / "mdw-test-heat-rn.json").write_text(json.dumps(TINY_RN))
    open_clip.add_model_config(tmp_path)
    m = build_model(ModelConfig(preset="mdw-test-heat-rn", device="cpu"), image_size=32, seed=0)
    tf = m.text.token_features(["the riverbank's playhouse"])[0]
    assert any(t.endswith("</w>") for t in tf.tokens)  # BPE tokens
    wm = word_maps(m, torch.rand(1, 3, 32, 32), ["A riverbank's playhouse, sunlit."])[0]
    assert wm.words == ["A", "riverbank's", "playhouse", "sunlit"] and wm.positions == [0, 1, 2, 3]
    assert wm.maps.shape == (4, 32, 32) and wm.maps.max() <= 1


# -- rendering --------------------------------------------------------------------------------------
def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_overlays_are_pngs_of_the_right_size():
    img = (np.random.default_rng(0).uniform(0, 1, (64, 64, 3)) * 255).astype(np.uint8)
    heat = np.zeros((4, 4))
    heat[1, 2] = 1.0
    a = overlay(img, heat, boxes=[[0.1, 0.2, 0.5, 0.6]])
    assert _decode(png_bytes(a)).size == (64, 64) and _decode(png_bytes(a)).mode == "RGB"
    b = overlay(img, heat, display_size=256, cmap="jet", mark_peak=True)
    assert _decode(png_bytes(b)).size == (256, 256)
    c = colourise(np.linspace(0, 1, 11)[None])
    assert c.shape == (1, 11, 3) and c.dtype == np.uint8 and not np.array_equal(c[0, 0], c[0, -1])
    from mdw.heatmaps.compute import WordMaps
    wm = WordMaps("a red dot", ["a", "red", "dot"], [0, 1, 2], np.random.rand(3, 64, 64).astype(np.float32),
                  np.array([0.1, 0.2, 0.3], np.float32), 0.4)
    grid = _decode(png_bytes(word_grid(img, wm, tile=96, cols=2)))
    assert grid.size[0] > 2 * 96 and grid.size[1] > 2 * 96
    with pytest.raises(ValueError):
        label_tiles([], [])


def test_store_append_replaces_groups(tmp_path, model):
    imgs = (np.random.default_rng(1).uniform(0, 1, (3, 32, 32, 3)) * 255).astype(np.uint8)
    caps = ["a red circle", "a blue square above a green star", "two shapes"]
    wms = word_maps(model, imgs, caps)
    run = str(tmp_path)
    append_items(run, pack("most_trusted", [5, 6, 7], imgs, wms, [0.9, 0.8, 0.7], [0, 0, 1]))
    append_items(run, pack("distilled", [0], imgs[:1], wms[1:2]))
    append_items(run, pack("most_trusted", [5], imgs[:1], wms[:1], [0.9], [0]))  # replaces the group
    z = load_packed(run)
    assert list(z["group"]) == ["distilled", "most_trusted"] and list(z["item_id"]) == [0, 5]
    assert z["maps"].dtype == np.float16 and z["maps"].shape == (len(wms[1].words) + len(wms[0].words), 32, 32)
    it = load_item(run, 1)
    assert it.maps.words == wms[0].words and np.allclose(it.maps.maps, wms[0].maps, atol=2e-3)
    assert np.array_equal(it.image, imgs[0]) and it.is_noisy == 0
    index = json.load(open(os.path.join(run, "heatmaps", "index.json")))
    assert index["groups"] == {"distilled": 1, "most_trusted": 1} and index["items"][0]["clean_score"] is None


def test_heatmap_config_defaults_and_checks():
    from mdw.errors import ConfigError
    from mdw.heatmaps.config import HeatmapConfig
    assert RunConfig.from_dict({}).heatmaps == HeatmapConfig()  # a config without the section: defaults
    assert RunConfig.from_dict({"heatmaps": {"n_most": 3}}).heatmaps.n_most == 3
    with pytest.raises(ConfigError, match="shifts"):
        RunConfig.from_dict({"heatmaps": {"shifts": 0}})


def test_select_trusted_is_disjoint():
    c = np.array([0.5, 0.9, 0.1, 0.7, 0.2])
    most, least = select_trusted(c, 2, 2)
    assert list(most) == [1, 3] and list(least) == [2, 4]
    most, least = select_trusted(c, 4, 4)
    assert len(set(most) | set(least)) == 5 and list(least) == [2]


# -- the run stage and the CLI ----------------------------------------------------------------------
def test_stage_writes_maps_and_cli_draws(tmp_path, cache_dir):
    from mdw.cli.main import main
    from mdw.pipeline import run_pipeline
    from mdw.runs.context import run_in_context
    from mdw.runs.store import RunStore
    from mdw.train.experts_io import load_scores

    store = RunStore(str(tmp_path / "runs"))
    cfg = apply_overrides(RunConfig(), ["data.scenes.n_train=60", "data.scenes.n_dev=4", "data.scenes.n_test=8",
                                        "data.image_size=32", "data.eta=0.3", "experts.epochs=1",
                                        "experts.batch_size=32", "model.device=cpu"])
    run_id = store.create(cfg.to_dict(), name="heat")
    assert run_in_context(store, run_id, lambda ctx: run_pipeline(ctx, until="heatmaps")) == 0
    assert store.read_status(run_id)["stages_done"] == ["data", "experts", "heatmaps"]
    run_dir = store.run_dir(run_id)
    z = load_packed(run_dir)
    index = json.load(open(os.path.join(run_dir, "heatmaps", "index.json")))
    assert index["groups"] == {"most_trusted": 32, "least_trusted": 32}
    scores = load_scores(run_dir)
    c = scores["consensus"][-1]
    ids = scores["pair_ids"]
    most = z["item_id"][z["group"] == "most_trusted"]
    least = z["item_id"][z["group"] == "least_trusted"]
    assert set(most) == set(ids[np.argsort(-c, kind="stable")[:32]]) and not set(most) & set(least)
    assert np.all(c[np.searchsorted(ids, most)].min() >= c[np.searchsorted(ids, least)].max())
    assert z["images"].shape == (64, 32, 32, 3) and z["maps"].shape[1:] == (32, 32)
    assert z["maps"].dtype == np.float16 and len(z["words"]) == z["word_start"][-1] == len(z["maps"])
    from mdw.inputs import run_data
    ps = run_data(run_dir).pairs
    assert [ps.captions[i] for i in z["item_id"][:3]] == list(z["caption"][:3])
    assert list(z["is_noisy"]) == [int(ps.is_noisy[i]) for i in z["item_id"]]
    # the CLI: a grid of every word, or one word
    img_path = tmp_path / "img.png"
    Image.fromarray(z["images"][0]).save(img_path)
    out = tmp_path / "heat.png"
    args = ["heatmap", "--run", run_id, "--runs", str(tmp_path / "runs"), "--image", str(img_path),
            "--caption", "a red circle above a blue square", "--out", str(out)]
    assert main(args) == 0 and _decode(out.read_bytes()).format == "PNG"
    one = tmp_path / "one.png"
    assert main(args[:-1] + [str(one), "--word", "circle", "--size", "128", "--track", "B"]) == 0
    assert _decode(one.read_bytes()).size[0] == 128 + 8
    assert main(args[:-1] + [str(one), "--word", "zebra"]) == 2


def test_heatmap_bench_expert_is_adam_unless_asked_for_the_run_default():
    from mdw.cli.heatmap_cmd import bench_config
    from mdw.cli.main import build_parser
    from mdw.config import ExpertConfig
    parse = lambda *a: bench_config(build_parser().parse_args(["bench", "heatmaps", *a]))
    e = parse().experts
    assert (e.optimizer, e.lr, e.grad_clip, e.dtcl) == ("adam", 0.001, 0.0, False)
    run_default = ExpertConfig()
    e = parse("--optimizer", "sgd", "--epochs", "3").experts
    assert (e.optimizer, e.lr, e.grad_clip, e.epochs) == ("sgd", run_default.lr, run_default.grad_clip, 3)
    assert parse().run_default and not parse("--no-run-default").run_default
    assert parse("--experts-dir", "saved").experts_dir == "saved"
