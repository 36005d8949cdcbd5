"""mdw.models: presets, towers, frozen text encoder, word merging, g0 cache, open_clip archs."""
import json
import os
import time

import pytest
import numpy as np
import torch
import torch.nn.functional as F

from mdw.config import ModelConfig
from mdw.errors import ModelError
from mdw.models import MDWModel, Normalize
from mdw.models import (PRESETS, ResNetConfig, ResNetTower, build_model, cached_g0_features, describe_presets,
                        merge_bpe, merge_wordpieces, model_summary, resolve_device, text_cache_path)
from mdw.models import openclip as oc

CAPTIONS = ["a red circle above a small blue square", "two dogs play near the riverbank",
            "a green triangle", "a playhouse"]

TINY_CONFIGS = {  # registered with open_clip for fast checkpoint round trips
    "mdw-test-tiny-vit": {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32,
                                                          "patch_size": 8, "head_width": 16},
                          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
    "mdw-test-tiny-rn": {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8,
                                                         "patch_size": None},
                         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
}


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(), image_size=64, seed=0)


@pytest.fixture(scope="module")
def tiny_archs(tmp_path_factory):
    import open_clip
    d = tmp_path_factory.mktemp("oc_configs")
    for name, cfg in TINY_CONFIGS.items():
        (d / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)
    return list(TINY_CONFIGS)


def _infonce(model, images, g0):
    img, txt, scale = model(images, g0)
    logits = scale * img @ txt.t()
    labels = torch.arange(len(images))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


# -- built-in preset ---------------------------------------------------------------------------

def test_cpu_small_shapes(model):
    x = torch.rand(3, 3, 64, 64)
    img = model.encode_image(x)
    assert img.shape == (3, 256) and torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    emb, feats = model.encode_image_with_features(x)
    assert feats.shape == (3, 256, 4, 4) and torch.allclose(emb, img, atol=1e-5)
    assert model.spatial_features(x).shape == (3, 256, 4, 4)
    txt = model.encode_text(CAPTIONS[:3])
    assert txt.shape == (3, 256) and torch.allclose(txt.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert model.g0_dim == 384 and model.embed_dim == 256
    assert model.logits(x, model.text.encode_g0(CAPTIONS[:3])).shape == (3, 3)
    assert abs(model.scale().detach().item() - 1 / 0.07) < 1e-3
    s = model_summary(model)
    assert 1.2e6 < s["image_tower_params"] < 1.4e6 and s["frozen_text_params"] > 2e7


def test_grads_only_on_trainable_params(model):
    model.train()
    assert not model.text.transformer.training  # g0 stays in eval mode
    g0 = model.text.encode_g0(CAPTIONS)
    model.zero_grad(set_to_none=True)
    _infonce(model, torch.rand(4, 3, 64, 64), g0).backward()
    trainable = dict(model.trainable_parameters())
    assert "logit_scale" in trainable and any(n.startswith("visual.") for n in trainable)
    assert not any(".transformer." in n for n in trainable)
    assert all(p.grad is not None for p in trainable.values())
    assert all(p.grad is None and not p.requires_grad for p in model.text.transformer.parameters())
    assert sum(p.numel() for p in trainable.values()) == model.num_trainable()
    model.zero_grad(set_to_none=True)
    model.eval()


def test_flat_params_round_trip(model):
    vec = model.flat_params()
    assert vec.dtype == torch.float32 and vec.shape == (model.num_trainable(),)
    x, g0 = torch.rand(2, 3, 64, 64), torch.randn(2, model.g0_dim)
    model.eval()
    before = model.logits(x, g0)
    with torch.no_grad():
        for _, p in model.trainable_parameters():
            p.add_(0.1)
    assert not torch.allclose(model.logits(x, g0), before)
    model.load_flat_params(vec)
    assert torch.equal(model.flat_params(), vec)
    assert torch.allclose(model.logits(x, g0), before)
    # functional use (trajectory matching): the same forward from a flat vector, differentiable
    theta = vec.clone().requires_grad_(True)
    out = torch.func.functional_call(model, model.unflatten(theta), (x, g0))
    assert torch.allclose(out[0], model.encode_image(x), atol=1e-6)
    out[0].sum().backward()
    assert theta.grad is not None and theta.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        model.load_flat_params(vec[:-1])
    assert model.flat_buffers().numel() == 0      # the built-in towers use GroupNorm: no running stats
    # a BatchNorm tower's running stats travel separately from the parameters
    bn = MDWModel(ResNetTower(ResNetConfig(channels=(8, 8, 8, 8), embed_dim=16, norm="batch")),
                  model.text, Normalize(), "bn-test", 64)
    bn.train()(torch.rand(4, 3, 64, 64), g0[:1].repeat(4, 1))
    bufs = bn.flat_buffers()
    assert bufs.numel() == sum(m.running_mean.numel() * 2 for m in bn.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn2 = MDWModel(ResNetTower(ResNetConfig(channels=(8, 8, 8, 8), embed_dim=16, norm="batch")),
                   model.text, Normalize(), "bn-test", 64)
    bn2.load_flat_buffers(bufs)
    assert torch.equal(bn2.flat_buffers(), bufs)


def test_builtin_presets_listed_and_seeded():
    assert {"cpu-small", "gpu-base"} <= set(PRESETS)
    assert any("open_clip" in d for _, d in describe_presets())
    a = build_model(ModelConfig(preset="gpu-base", embed_dim=64), image_size=32, seed=1)
    b = build_model(ModelConfig(preset="gpu-base", embed_dim=64), image_size=32, seed=1)
    assert a.embed_dim == 64 and torch.equal(a.flat_params(), b.flat_params())
    assert a.spatial_features(torch.rand(1, 3, 32, 32)).shape == (1, 512, 2, 2)


@pytest.mark.parametrize("size,grid", [(32, 2), (64, 4), (224, 14)])
def test_resnet_tower_sizes(size, grid):
    tower = ResNetTower(ResNetConfig(channels=(8, 8, 16, 16), embed_dim=16))
    emb, feats = tower.forward_with_features(torch.randn(1, 3, size, size))
    assert emb.shape == (1, 16) and feats.shape == (1, 16, grid, grid)


# -- words and tokens --------------------------------------------------------------------------

def test_merge_wordpieces():
    words = merge_wordpieces(["a", "play", "##house", "by", "the", "river", "##ban", "##k", "."])
    assert [w.text for w in words] == ["a", "playhouse", "by", "the", "riverbank", "."]
    assert words[1].positions == (1, 2) and words[4].positions == (5, 6, 7)
    assert merge_wordpieces(["##x", "y"])[0].text == "##x"  # a leading piece stays a word


def test_merge_bpe():
    words = merge_bpe(["a</w>", "play", "house</w>", "by</w>", "river", "ba", "nk</w>", "tru", "nc"])
    assert [w.text for w in words] == ["a", "playhouse", "by", "riverbank", "trunc"]
    assert words[1].positions == (1, 2) and words[3].positions == (4, 5, 6) and words[4].positions == (7, 8)


def test_token_features(model):
    feats = model.text.token_features(["A playhouse near the riverbank.", "dogs"])
    tf = feats[0]
    assert tf.tokens[0] == "a" and "##bank" in tf.tokens  # WordPiece splits "riverbank"
    assert tf.hidden.shape == (len(tf.tokens), 384)
    assert [w.text for w in tf.words] == ["a", "playhouse", "near", "the", "riverbank", "."]
    assert tf.word_features().shape == (6, 384)
    assert feats[1].tokens == ["dogs"] and feats[1].hidden.shape == (1, 384)
    # token states live in g0's space: "dogs" is nearer g0("dogs") than g0 of another caption
    g0 = model.text.encode_g0(["dogs", "a green triangle"])
    sims = F.cosine_similarity(feats[1].hidden[0:1], g0, dim=1)
    assert sims[0] > sims[1]
    model.text.proj(tf.hidden).sum().backward()  # usable in autograd (not inference tensors)
    model.zero_grad(set_to_none=True)


# -- g0 feature cache --------------------------------------------------------------------------

class _Counting:
    """Wraps the real encoder and counts encode_g0 calls."""

    def __init__(self, enc):
        self.enc, self.calls = enc, 0
        self.encoder_id, self.g0_dim = enc.encoder_id, enc.g0_dim

    def encode_g0(self, captions, batch_size=256, progress=None):
        self.calls += 1
        return self.enc.encode_g0(captions, batch_size=batch_size, progress=progress)


class _NoEncoder:
    """Only the identity of the real encoder: proves a cache hit never encodes."""

    def __init__(self, enc):
        self.encoder_id, self.g0_dim = enc.encoder_id, enc.g0_dim

    def encode_g0(self, *a, **k):
        raise AssertionError("the encoder ran on a cache hit")


def test_text_cache(model, tmp_path):
    cache = str(tmp_path)
    enc = _Counting(model.text)
    fracs = []
    first = cached_g0_features(CAPTIONS, enc, cache, progress=fracs.append, batch_size=2)
    assert enc.calls == 1 and first.shape == (4, 384) and first.dtype == torch.float32
    assert fracs and fracs[-1] == 1.0
    path = text_cache_path(CAPTIONS, model.text, cache)
    assert os.path.isfile(path) and os.path.dirname(path) == os.path.join(cache, "text")
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".tmp" in f]
    assert torch.allclose(first, model.text.encode_g0(CAPTIONS), atol=1e-5)  # caption order kept

    again = cached_g0_features(CAPTIONS, _NoEncoder(model.text), cache)
    assert torch.equal(again, first)
    assert again.requires_grad is False and not again.is_inference()

    changed = CAPTIONS[:3] + ["a playhouse!"]
    cached_g0_features(changed, enc, cache)
    assert enc.calls == 2 and text_cache_path(changed, model.text, cache) != path
    cached_g0_features(CAPTIONS, enc, cache, key_extra="other")
    assert enc.calls == 3

    # a damaged file is recomputed (replaced by a new file, as every writer here does: truncating a
    # file in place under a process that maps it would crash that process, SIGBUS)
    os.remove(path)
    with open(path, "wb") as f:
        f.write(b"not an array")
    assert torch.allclose(cached_g0_features(CAPTIONS, enc, cache), first, atol=1e-5)
    assert enc.calls == 4


def test_text_cache_accepts_model(model, tmp_path):
    feats = cached_g0_features(CAPTIONS[:2], model, str(tmp_path))
    assert feats.shape == (2, model.g0_dim)


# -- open_clip architectures --------------------------------------------------------------------

def test_openclip_arch_builds_offline_random():
    m = build_model(ModelConfig(preset="openclip:ViT-S-32-alt"), image_size=64, seed=0)
    assert m.embed_dim == 256 and m.g0_dim == 256 and "random" in m.text.encoder_id
    x = torch.rand(2, 3, 64, 64)  # resized to the tower's native 224 px inside the model
    emb, feats = m.encode_image_with_features(x)
    assert emb.shape == (2, 256) and feats.shape == (2, 384, 7, 7)
    assert torch.allclose(emb, m.encode_image(x), atol=1e-5)
    g0 = m.text.encode_g0(CAPTIONS[:2])
    assert torch.allclose(m.encode_text_g0(g0, normalize=False), g0, atol=1e-6)  # h starts as identity
    s = (emb * m.encode_text_g0(g0)).sum()
    assert torch.autograd.grad(s, feats)[0].abs().sum() > 0  # Grad-CAM signal on the ViT map
    names = m.trainable_names()
    assert names and not any(n.startswith("text.clip.") for n in names)
    tf = m.text.token_features(["a playhouse by the riverbank"])[0]
    assert [w.text for w in tf.words] == ["a", "playhouse", "by", "the", "riverbank"]
    assert tf.hidden.shape == (len(tf.tokens), 256)
    with pytest.raises(ModelError, match="embed"):
        build_model(ModelConfig(preset="ViT-S-32-alt", embed_dim=128), image_size=64)


@pytest.mark.parametrize("arch,grid", [("mdw-test-tiny-vit", 4), ("mdw-test-tiny-rn", 2)])
def test_openclip_local_checkpoint_round_trip(tiny_archs, tmp_path, arch, grid):
    import open_clip
    torch.manual_seed(3)
    src = open_clip.create_model(arch)
    ckpt = tmp_path / "x.pt"
    torch.save(src.state_dict(), ckpt)
    m = build_model(ModelConfig(preset=f"{arch}:{ckpt}"), image_size=32)
    src_vis = {k: v for k, v in src.visual.state_dict().items()}
    for k, v in m.visual.trunk.state_dict().items():
        assert torch.equal(v, src_vis[k]), k
    ids = open_clip.get_tokenizer(arch)(CAPTIONS[:2])
    with torch.no_grad():
        assert torch.allclose(m.text.encode_g0(CAPTIONS[:2]), src.encode_text(ids), atol=1e-5)
    assert m.spatial_features(torch.rand(1, 3, 32, 32)).shape[-2:] == (grid, grid)
    assert "random" not in m.text.encoder_id


def test_hub_tag_offline_fails_fast(monkeypatch):
    monkeypatch.setattr(oc, "cached_weights", lambda cfg: None)  # even if this machine has them cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(ModelError) as e:
        build_model(ModelConfig(preset="ViT-B-32:laion2b_s34b_b79k"), image_size=64)
    assert time.time() - t < 5
    msg = str(e.value)
    assert "offline" in msg and "local checkpoint" in msg and 'preset="ViT-B-32:/path/to/' in msg
    # without the env flag: a failed network probe gives the same fast error
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(oc, "host_reachable", lambda host, *a, **k: False)
    t = time.time()
    with pytest.raises(ModelError, match="local checkpoint"):
        build_model(ModelConfig(preset="openclip:RN50:openai"), image_size=64)
    assert time.time() - t < 5


def test_host_probe_is_bounded():
    t = time.time()
    assert oc.host_reachable("no-such-host.invalid", timeout=1.0) is False
    assert time.time() - t < 3


def test_bad_presets():
    with pytest.raises(ModelError, match="cpu-small.*open_clip.list_models"):
        build_model(ModelConfig(preset="no-such-model"), image_size=64)
    with pytest.raises(ModelError, match="Did you mean cpu-small"):
        build_model(ModelConfig(preset="cpu-smal"), image_size=64)
    with pytest.raises(ModelError, match="checkpoint file not found: .*missing.pt"):
        build_model(ModelConfig(preset="ViT-S-32:/nonexistent/missing.pt"), image_size=64)
    with pytest.raises(ModelError, match="tags: "):
        build_model(ModelConfig(preset="ViT-S-32:no_such_tag"), image_size=64)
    with pytest.raises(ModelError, match="total stride"):
        build_model(ModelConfig(), image_size=8)


def test_resolve_device():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelError):
        resolve_device("tpu-9")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_text_cache_encodes_each_distinct_caption_once_and_maps_the_file(model, tmp_path):
    seen = []

    class Recording:
        encoder_id, g0_dim = model.text.encoder_id, model.text.g0_dim

        def encode_g0(self, captions, batch_size=256, progress=None):
            seen.extend(captions)
            return model.text.encode_g0(captions)

    caps = ["a dog", "a cat", "a dog", "a bird", "a cat", "a dog"]
    feats = cached_g0_features(caps, Recording(), str(tmp_path))
    assert seen == ["a dog", "a cat", "a bird"]                   # first-seen order, once each
    assert feats.shape == (6, 384) and torch.equal(feats[0], feats[2]) and torch.equal(feats[1], feats[4])
    assert torch.allclose(feats, model.text.encode_g0(caps), atol=1e-5)
    path = text_cache_path(caps, model.text, str(tmp_path))
    assert isinstance(np.load(path, mmap_mode="r"), np.memmap) and path.endswith(".npy")
    feats[0, 0] = 123.0                                           # copy-on-write: the file is never written
    assert np.load(path)[0, 0] != 123.0


def test_text_cache_encodes_in_chunks_and_places_every_row(model, tmp_path, monkeypatch):
    from mdw.models import text_cache
    monkeypatch.setattr(text_cache, "ENCODE_CHUNK", 2)          # 5 distinct captions: chunks of 2, 2, 1
    caps = ["e", "a dog", "b", "a dog", "c", "e", "d"]
    feats = cached_g0_features(caps, model.text, str(tmp_path))
    assert torch.allclose(feats, model.text.encode_g0(caps), atol=1e-5)
