"""Model families (issue 19): timm image towers, hf text encoders, open_clip frozen or fine-tuned,
the nfnet-bert preset; local weights round trips, tiny pipeline runs with a timm CNN and a ViT,
their word heatmaps, offline failures, and the buffer of a frozen tower. CPU, offline, tiny models."""
import json
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from mdw.config import ModelConfig
from mdw.errors import ModelError
from mdw.heatmaps.compute import word_maps
from mdw.heatmaps.store import load_item, load_packed
from mdw.models import build_model, hub, model_summary
from mdw.models.presets import PRESETS, preset_choices
from mdw.train.experts_io import experts_meta, load_buffer, load_expert

from helpers import run_tiny

CAPTIONS = ["a red circle above a small blue square", "two dogs play near the riverbank"]
CAPTION = "A red square, and a green square."


def _timm_folder(path, arch, **args):
    """A random-weight timm model saved as timm's own folder format (config.json with model_args)."""
    import timm
    from timm.models import save_for_hf
    torch.manual_seed(7)
    model = timm.create_model(arch, num_classes=0, **args).eval()
    save_for_hf(model, str(path), model_args=args)
    return model


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("timm_cnn")
    _timm_folder(d, "test_resnet", output_stride=8)   # a 4x4 last map at 32 px
    return d


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("timm_vit")
    _timm_folder(d, "test_vit", img_size=32, patch_size=8, global_pool="avg")   # a 4x4 patch grid at 32 px
    return d


# -- each family: random weights saved to a local folder, loaded back through the run config ----------
@pytest.mark.parametrize("arch,args,grid", [("test_resnet", {"output_stride": 8}, 4),
                                            ("test_vit", {"img_size": 32, "patch_size": 8}, 4)])
def test_timm_folder_and_file_round_trip(tmp_path, arch, args, grid):
    src = _timm_folder(tmp_path / "folder", arch, **args)
    x = torch.rand(2, 3, 32, 32)
    m = build_model(ModelConfig(preset=f"timm:{arch}:{tmp_path / 'folder'}", embed_dim=16, device="cpu"), 32, seed=0)
    trunk = m.visual.trunk.eval()
    with torch.no_grad():
        assert torch.equal(trunk(m.normalize(x)), src(m.normalize(x)))
        emb, fmap = m.encode_image_with_features(x)
    assert emb.shape == (2, 16) and fmap.shape[-2:] == (grid, grid)
    assert torch.allclose(emb, m.encode_image(x), atol=1e-6)       # the embedding is computed from the map
    # the pixel statistics are the weights' own (timm's test models: 0.5, 0.5)
    assert torch.allclose(m.normalize.mean.flatten(), torch.tensor(src.pretrained_cfg["mean"]))
    # a plain state dict file, with the architecture named (no model_args: the default test_resnet)
    if arch == "test_resnet":
        import timm
        plain = timm.create_model(arch, num_classes=0).eval()
        torch.save(plain.state_dict(), tmp_path / "w.pth")
        m2 = build_model(ModelConfig(preset=f"timm:{arch}:{tmp_path / 'w.pth'}", device="cpu"), 32)
        for k, v in m2.visual.trunk.state_dict().items():
            assert torch.equal(v, plain.state_dict()[k]), k


def _tiny_bert(path):
    """A random 2-layer BERT with the MiniLM package's WordPiece tokenizer, saved as a HF folder."""
    from transformers import BertConfig, BertModel
    from mdw.models.text import load_tokenizer
    tok = load_tokenizer()
    torch.manual_seed(5)
    bert = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64)).eval()
    bert.save_pretrained(path)
    tok.save_pretrained(path)
    return bert, tok


@pytest.mark.parametrize("pooling", ["cls", "mean", "auto"])
def test_hf_text_encoder_folder_round_trip(tmp_path, pooling):
    bert, tok = _tiny_bert(tmp_path / "bert")
    m = build_model(ModelConfig(preset="cpu-small", text=f"hf:{tmp_path / 'bert'}", text_pooling=pooling,
                                device="cpu"), 32, seed=0)
    enc = tok(CAPTIONS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    want = hidden[:, 0] if pooling in ("cls", "auto") else (hidden * mask).sum(1) / mask.sum(1)  # auto: no ST config -> CLS
    assert m.g0_dim == 32 and torch.allclose(m.text.encode_g0(CAPTIONS), want, atol=1e-5)
    assert m.text.pooling == ("mean" if pooling == "mean" else "cls")
    assert ("-cls-" in m.text.encoder_id) == (pooling != "mean")   # the g0 cache tells the poolings apart
    words = [w.text for w in m.text.token_features(["a playhouse by the riverbank"])[0].words]
    assert words == ["a", "playhouse", "by", "the", "riverbank"]
    assert m.encode_text(CAPTIONS).shape == (2, 256)


def test_openclip_image_tower_frozen_or_fine_tuned(tmp_path):
    import open_clip
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "mdw-test-fam-vit.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path)
    torch.manual_seed(3)
    src = open_clip.create_model("mdw-test-fam-vit")
    torch.save(src.state_dict(), tmp_path / "ckpt.pt")
    tuned = build_model(ModelConfig(preset=f"mdw-test-fam-vit:{tmp_path / 'ckpt.pt'}", device="cpu"), 32)
    frozen = build_model(ModelConfig(preset=f"mdw-test-fam-vit:{tmp_path / 'ckpt.pt'}", image_trainable=False,
                                     device="cpu"), 32)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(frozen.encode_image(x), tuned.encode_image(x), atol=1e-6)
    assert any(n.startswith("visual.") for n in tuned.trainable_names())
    assert not any(n.startswith("visual.") for n in frozen.trainable_names())
    assert frozen.num_trainable() == 32 * 32 + 1   # h (identity-initialised 32x32) and τ
    with pytest.raises(ModelError, match="brings its own text tower"):
        build_model(ModelConfig(preset="mdw-test-fam-vit", text="hf:/x", device="cpu"), 32)


# -- the published pairing and the offline rule ----------------------------------------------------------
def test_nfnet_bert_preset_and_app_list():
    p = PRESETS["nfnet-bert"]
    assert (p.image, p.text, p.text_pooling, p.image_size, p.embed_dim) == \
        ("timm:nfnet_l0:pretrained", "hf:bert-base-uncased", "cls", 224, 2304)
    choices = preset_choices()
    assert choices[:len(PRESETS)] == list(PRESETS) and any(c.startswith("timm:") for c in choices)
    from mdw.views.runs import form_choices
    assert form_choices().presets == choices         # the app's new-run form lists presets.py's choices


@pytest.mark.parametrize("cfg,hint", [
    (ModelConfig(preset="timm:resnet18:pretrained", device="cpu"), 'model.preset="timm:resnet18:/path/to/FOLDER"'),
    (ModelConfig(preset="cpu-small", text="hf:bert-base-uncased", device="cpu"), 'model.text="hf:/path/to/FOLDER"'),
    (ModelConfig(preset="nfnet-bert", device="cpu"), "hf:/path/to/FOLDER"),
])
def test_hub_name_offline_fails_at_once_with_the_path_hint(monkeypatch, cfg, hint):
    import timm  # noqa: F401 - imported before the clock starts: its import (~2 s here) is no network wait
    import transformers  # noqa: F401

    import mdw.models.timm_tower as tt
    for mod in (hub, tt):
        monkeypatch.setattr(mod, "hf_cached_file", lambda *a, **k: None)   # even if this machine has them cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(ModelError) as e:
        build_model(cfg, 32)
    assert time.time() - t < 1.0
    assert "offline" in str(e.value) and hint in str(e.value)
    # no offline flag and no network: the bounded probe says so, still at once
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "host_reachable", lambda host, *a, **k: False)
    t = time.time()
    with pytest.raises(ModelError, match="unreachable"):
        build_model(cfg, 32)
    assert time.time() - t < 1.0


def test_bad_family_names():
    with pytest.raises(ModelError, match="'resnet_nope' is not a timm model"):
        build_model(ModelConfig(preset="timm:resnet_nope", device="cpu"), 32)
    with pytest.raises(ModelError, match="no such pretrained tag"):
        build_model(ModelConfig(preset="timm:test_resnet:no_such_tag", device="cpu"), 32)
    with pytest.raises(ModelError, match="local weights not found: .*missing"):
        build_model(ModelConfig(preset="timm:test_resnet:/nonexistent/missing.pth", device="cpu"), 32)
    with pytest.raises(ModelError, match="use hf:NAME_OR_PATH"):
        build_model(ModelConfig(text="bert-base-uncased", device="cpu"), 32)


# -- tiny runs: a timm CNN and a ViT, end to end ----------------------------------------------------------
def _planted_image():
    img = np.full((32, 32, 3), 0.45)
    img[0:8, 8:16] = (1.0, 0.05, 0.05)      # red cell: top row, second column
    img[24:32, 16:24] = (0.05, 1.0, 0.05)   # green cell: bottom row, third column
    return (img * 255).astype(np.uint8)


def _plant(model):
    """Plant a trained model in place: every convolution passes channels 0-2 through (its centre tap;
    a ViT's patch embedding: the patch mean), BatchNorm is the identity, every linear layer inside the
    trunk is zero (a ViT block: the identity), no position or class embedding; the head reads channels
    0-2 into the first three axes, and h maps the words red / green / square onto those axes. The last
    map then holds the (normalised, for a CNN rectified) colour of each cell."""
    with torch.no_grad():
        for name, mod in model.visual.trunk.named_modules():
            if isinstance(mod, nn.Conv2d):
                assert mod.groups == 1 and min(mod.in_channels, mod.out_channels) >= 3, name
                mod.weight.zero_()
                kh, kw = mod.weight.shape[-2:]
                for i in range(3):
                    if "patch_embed" in name:
                        mod.weight[i, i] = 1.0 / (kh * kw)
                    else:
                        mod.weight[i, i, kh // 2, kw // 2] = 1.0
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.fill_(1.0)
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
            elif isinstance(mod, nn.Linear):
                mod.weight.zero_()
            else:
                continue
            if getattr(mod, "bias", None) is not None:
                mod.bias.zero_()
        for n, p in model.visual.trunk.named_parameters():
            if n in ("pos_embed", "cls_token", "reg_token"):
                p.zero_()
        head = model.visual.head
        head.weight.zero_()
        head.bias.zero_()
        head.weight[:3, :3] = torch.eye(3)
        tf = model.text.token_features([CAPTION])[0]
        names = [w.text for w in tf.words]
        feats = torch.stack([tf.word_features()[names.index(w)] for w in ("red", "green", "square")])
        model.text.proj.weight.copy_(torch.eye(3, head.weight.shape[0]).T @ torch.linalg.pinv(feats.T))


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_tiny_run_with_a_timm_tower(tmp_path, monkeypatch, cnn_dir, vit_dir, kind):
    monkeypatch.setenv("MDW_CACHE", str(tmp_path / "cache"))
    spec = f"timm:test_resnet:{cnn_dir}" if kind == "cnn" else f"timm:test_vit:{vit_dir}"
    store, run_id, code = run_tiny(tmp_path, f"model.preset={spec}", "model.embed_dim=32")
    run_dir = store.run_dir(run_id)
    assert code == 0, open(f"{run_dir}/log.txt").read()[-2000:]
    results = json.load(open(f"{run_dir}/eval/results.json"))
    assert {r["method"] for r in results["rows"]} == {"random", "mdw"}
    assert all(np.isfinite(r["mean_recall"]) for r in results["rows"])
    item = load_item(run_dir, 0, load_packed(run_dir))            # stored word heatmaps: the image's size
    assert item.maps.maps.shape[1:] == (32, 32) and item.maps.maps.max() <= 1
    # the run's expert, planted: "red" and "green" point at their cells
    model = load_expert(run_dir, "dtcl", "A", device="cpu")
    img = _planted_image()
    _plant(model)
    wm = word_maps(model, img[None], [CAPTION])[0]
    for word, (r0, c0) in (("red", (0, 8)), ("green", (24, 16))):
        m = wm.maps[wm.word_index(word)]
        assert m.shape == (32, 32)
        y, x = np.unravel_index(int(m.argmax()), m.shape)
        assert r0 <= y < r0 + 8 and c0 <= x < c0 + 8, (word, y, x)


def test_frozen_tower_buffer_holds_only_the_trainable_parameters(tmp_path, monkeypatch, cnn_dir):
    monkeypatch.setenv("MDW_CACHE", str(tmp_path / "cache"))
    store, run_id, code = run_tiny(tmp_path, f"model.preset=timm:test_resnet:{cnn_dir}", "model.embed_dim=32",
                                   "model.image_trainable=false", until="experts")
    run_dir = store.run_dir(run_id)
    assert code == 0
    meta = experts_meta(run_dir, "dtcl")
    names = [n for n, _ in meta["params"]]
    assert names == ["logit_scale", "visual.head.weight", "visual.head.bias", "text.encoder.proj.weight"]
    buf = load_buffer(run_dir, "dtcl", "A")
    assert buf.shape == (3, 1 + 32 * 96 + 32 + 32 * 384)     # epochs 0..2; τ, head (96 -> 32), h (384 -> 32)
    assert not torch.equal(buf[0], buf[-1])                   # what trains, moved
    model = load_expert(run_dir, "dtcl", "A", device="cpu")   # the body is the folder's weights, untouched
    fresh = build_model(ModelConfig(preset=f"timm:test_resnet:{cnn_dir}", embed_dim=32, image_trainable=False,
                                    device="cpu"), 32)
    for (k, v), w in zip(model.visual.trunk.state_dict().items(), fresh.visual.trunk.state_dict().values()):
        assert torch.equal(v, w), k
    assert model_summary(model)["image_trainable"] is False and not model.visual.trunk.training
