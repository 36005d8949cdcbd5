"""Integrated gradients (mdw.models.attribution) and the word context of the word maps."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mdw.errors import ConfigError
from mdw.heatmaps.compute import CamOptions, with_context, word_maps
from mdw.models.attribution import attributions, border_colour, integrated_gradients

from helpers import PLANTED_CAPTION, planted_image


pytestmark = pytest.mark.usefixtures("one_thread")


class SmoothTower(torch.nn.Module):
    """A small smooth nonlinear tower (conv, tanh, pooling, linear): IG's Riemann sum converges on it."""
    output_dim = 16

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.head = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8 * 16, 16)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(torch.tanh(3 * self.conv(x)), 4).flatten(1))


def test_attributions_sum_to_the_change_of_the_similarity(planted):
    """Completeness (Sundararajan et al. 2017, prop. 1): Σ_i IG_i = s(x, t) − s(x₀, t), up to the
    Riemann sum's error, which falls with the steps."""
    from mdw.models.model import MDWModel
    from mdw.models.towers import Normalize

    model = MDWModel(SmoothTower(), planted.text, Normalize((0, 0, 0), (1, 1, 1)), "smooth", 32).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand((2, 3, 32, 32), generator=g)
    t = F.normalize(torch.randn((2, 3, 16), generator=g), dim=-1)
    with torch.no_grad():
        s = lambda im: torch.einsum("nd,nkd->nk", model.encode_image(im), t)   # noqa: E731
        change = s(x) - s(border_colour(x).expand_as(x))
    err = {n: (attributions(model, x, t, steps=n).sum((-2, -1)) - change).abs().max().item() for n in (2, 32)}
    assert change.abs().min() > 0.01
    assert err[32] < 0.01 * change.abs().max().item()
    assert err[32] < err[2]


def test_border_colour_is_the_median_of_the_border():
    x = torch.zeros((1, 3, 8, 8))
    x[0, :, 2:6, 2:6] = 1.0          # an object inside
    x[0, 0, 0, :3] = 1.0             # three odd border pixels of red
    assert border_colour(x).flatten().tolist() == [0.0, 0.0, 0.0]


def test_integrated_gradients_point_at_the_planted_cell(planted):
    img = planted_image()
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    maps, sims = integrated_gradients(planted, x, torch.eye(3)[None, :2], steps=8)
    assert maps.shape == (1, 2, 32, 32) and 0 <= maps.min() and maps.max() == pytest.approx(1.0)
    for k, (r0, c0) in enumerate(((0, 0), (24, 16))):      # R axis: the red cell; G axis: the green one
        y, xx = np.unravel_index(int(maps[0, k].argmax()), (32, 32))
        assert r0 <= y < r0 + 8 and c0 <= xx < c0 + 8, (k, y, xx)
        assert maps[0, k, r0:r0 + 8, c0:c0 + 8].mean() > 0.5 and maps[0, k].mean() < 0.1
    assert sims[0, 0] > 0 and sims[0, 1] > 0
    padded = integrated_gradients(planted, x, torch.zeros((1, 1, 3)))[0]
    assert padded.abs().sum() == 0                            # a zero direction has an all-zero map


@pytest.mark.parametrize("attribution", ["ig", "ig+cam"])
def test_word_maps_by_attribution_point_at_the_named_cells(planted, attribution):
    img = planted_image()
    wm = word_maps(planted, img[None], [PLANTED_CAPTION], cam=CamOptions(attribution=attribution))[0]
    red, green = wm.maps[wm.word_index("red")], wm.maps[wm.word_index("green")]
    assert red.shape == (32, 32)
    yr, xr = np.unravel_index(int(red.argmax()), red.shape)
    yg, xg = np.unravel_index(int(green.argmax()), green.shape)
    assert yr < 8 and xr < 8 and yg >= 24 and 16 <= xg < 24


def test_context_adds_the_neighbouring_words_by_hand():
    d = F.normalize(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]]), dim=-1)  # last: padding
    out = with_context(d, [[0, 1, 3]], (1.0, 0.5))
    s = 2 ** -0.5
    expect = [F.normalize(torch.tensor([1.0, 0.5]), dim=0),            # + 0.5 × the next word (position 1)
              F.normalize(torch.tensor([1.0, 1.0]), dim=0),            # + 1 × the previous (position 0); none at 2
              torch.tensor([s, s]),                                    # position 3: no neighbour at 2 or 4
              torch.zeros(2)]
    for got, want in zip(out[0], expect):
        assert torch.allclose(got, want, atol=1e-6)
    assert torch.equal(with_context(d, [[0, 1, 3]], (0.0, 0.0)), d)
    assert torch.allclose(with_context(d[:, :2], [[0, -1]], (1.0, 1.0)), d[:, :2])   # unaligned words: none


def test_the_old_maps_are_one_setting_away(planted):
    """attribution="cam" without context draws the Grad-CAM maps of before (same floats)."""
    from mdw.models.gradcam import gradcam_with_scores

    img = planted_image()
    cam = dataclasses.replace(CamOptions(), attribution="cam", context=(0.0, 0.0), flip=False, blur=0.0)
    wm = word_maps(planted, img[None], [PLANTED_CAPTION], cam=cam)[0]
    txt = planted.text
    with torch.no_grad():
        sent = F.normalize(planted.encode_text([PLANTED_CAPTION]), dim=-1)
        tf = txt.token_features([PLANTED_CAPTION])[0]
        red = F.normalize(planted.encode_text_g0(tf.word_features()[[w.text for w in tf.words].index("red")][None]), dim=-1)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    maps, _ = gradcam_with_scores(planted, x, (red - cam.contrast * sent)[:, None], out_size=32, align=cam.align,
                                  shifts=cam.shifts, positive=cam.positive)
    assert np.allclose(wm.maps[wm.word_index("red")], maps[0, 0].numpy(), atol=1e-6)


@pytest.mark.parametrize("bad", [dict(attribution="occlusion"), dict(ig_steps=0), dict(context=(1.0,))])
def test_bad_map_options_are_named(bad):
    with pytest.raises(ConfigError, match="heatmap"):
        CamOptions(**bad)
