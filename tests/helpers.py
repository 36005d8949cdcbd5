"""Small real datasets and run configs made inside tests."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from mdw.data.pairset import BytesImages, PairSet

# The team's Flickr8k copy, beside the repository (tests that read it skip when it is absent).
SHARED_FLICKR8K = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "flickr8k")


def png_bytes(seed: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_shard(path, samples) -> str:
    """A plain .tar at `path` with members (name, bytes), in order (a webdataset shard)."""
    import tarfile
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def tiny_pairset(n_images: int = 40, captions_per_image: int = 3, splits=(0.7, 0.15, 0.15), seed: int = 0) -> PairSet:
    """n_images random-noise PNGs held in memory, each with `captions_per_image` captions."""
    names = [f"img{i:04d}.png" for i in range(n_images)]
    blobs = [png_bytes(seed * 100003 + i) for i in range(n_images)]
    n_tr = int(splits[0] * n_images)
    n_dev = int(splits[1] * n_images)
    split = ["train"] * n_tr + ["dev"] * n_dev + ["test"] * (n_images - n_tr - n_dev)
    captions, owner = [], []
    for i in range(n_images):
        for k in range(captions_per_image):
            captions.append(f"caption {k} of image {i}")
            owner.append(i)
    return PairSet(name="tiny", images=BytesImages(names, blobs), image_split=np.array(split, dtype=object),
                   captions=captions, pair_image=np.array(owner))


# A whole pipeline run (data → experts → heatmaps → distill → evaluate) in well under a minute.
TINY_RUN = ["data.scenes.n_train=60", "data.scenes.n_dev=10", "data.scenes.n_test=20", "data.image_size=32",
            "experts.batch_size=32", "experts.epochs=2", "data.eta=0.2",
            "distill.m=8", "distill.iterations=4", "distill.syn_steps=2", "distill.expert_epochs=1",
            "distill.max_start_epoch=1", "distill.snapshots=1", "distill.ceo_refresh=2",
            "heatmaps.n_most=4", "heatmaps.n_least=4",
            "evaluate.steps=20", "evaluate.seeds=2"]


def run_tiny(root, *extra, until=None, name="tiny"):
    """A TINY_RUN pipeline run (plus `extra` overrides) in root/runs with its own cache in root/cache:
    (store, run_id, exit code). Sets $MDW_CACHE (tests restore it with monkeypatch or a fixture)."""
    from mdw.config import RunConfig, apply_overrides
    from mdw.pipeline import run_pipeline
    from mdw.runs.context import run_in_context
    from mdw.runs.store import RunStore

    os.environ["MDW_CACHE"] = str(root / "cache")
    cfg = apply_overrides(RunConfig(), TINY_RUN + ["model.device=cpu", "evaluate.methods=random,mdw"] + list(extra))
    store = RunStore(str(root / "runs"))
    run_id = store.create(cfg.to_dict(), name=name)
    code = run_in_context(store, run_id, lambda ctx: run_pipeline(ctx, until=until))
    return store, run_id, code


def assert_adjoint_equals_unrolled(student, syn, start, target, batches) -> None:
    """match_adjoint's L_TM and its gradients on every leaf of D̃ equal the fully unrolled graph's."""
    import pytest
    import torch

    from mdw.distill.matching import match_adjoint, match_unrolled

    leaves = [syn.images, syn.text, syn.log_alpha] + syn.label_leaves()
    ref = match_unrolled(student, syn, start, target, batches)
    ref_grads = torch.autograd.grad(ref, leaves)
    val = match_adjoint(student, syn, start, target, batches)
    assert val == pytest.approx(ref.item(), rel=1e-9)
    for r, t in zip(ref_grads, leaves):
        assert r.abs().max() > 0 and torch.allclose(t.grad, r, rtol=1e-6, atol=1e-10 * r.abs().max().item())


def write_run_data_for(run_dir, captions, pair_image=None, is_noisy=None, size: int = 2, keys=None):
    """The run's own data (data/images.npy, data/table, data/pairs.json) for `captions` with tiny
    grey images (one per caption unless pair_image says otherwise): for tests that write scores by
    hand. Returns the RunLayout."""
    from mdw.config import DataConfig
    from mdw.data.noise import Noise
    from mdw.data.prepare import Prepared
    from mdw.data.image_array import ArrayImages
    from mdw.data.run_data import write_run_data
    from mdw.runs.layout import RunLayout

    n = len(captions)
    pair_image = np.arange(n) if pair_image is None else np.asarray(pair_image)
    n_images = int(pair_image.max()) + 1 if n else 0
    images = np.full((n_images, size, size, 3), 128, dtype=np.uint8)
    names = [f"img{i}" for i in range(n_images)] if keys is None else list(keys)
    ps = PairSet(name="synthetic", images=ArrayImages(names, images, np.arange(n_images), "synthetic"),
                 image_split=np.array(["train"] * n_images, dtype=object), captions=list(captions),
                 pair_image=pair_image,
                 is_noisy=np.zeros(n, bool) if is_noisy is None else np.asarray(is_noisy, bool))
    lay = RunLayout(run_dir)
    write_run_data(lay, Prepared(ps, images, Noise(0.0, 0, np.zeros(0, np.int64), np.zeros(0, np.int64)),
                                 "synthetic"), DataConfig(image_size=size))
    return lay


def bench_row(ds, eta, m, method, recall):
    """One `bench distill` table row with only the keys the merge and the summary read."""
    return {"dataset": ds, "eta": eta, "M": m, "method": method, "arch": "cpu-small", "mean_recall": recall}



def tiny_setup(loss="soft", m=6, size=32, seed=0):
    """(student, D̃ with P̃ off the identity, start, target, batches) in float64 for the matching tests."""
    from mdw.config import ModelConfig
    from mdw.distill.matching import Student
    from mdw.distill.synset import DistilledSet
    from mdw.models.presets import build_model

    torch.manual_seed(seed)
    model = build_model(ModelConfig(device="cpu"), size, seed=seed).double()
    student = Student(model, loss)
    images = torch.randint(0, 256, (m, size, size, 3), dtype=torch.uint8)
    syn = DistilledSet.from_real(images, torch.randn(m, model.g0_dim), np.arange(m), lr=0.05)
    syn.images, syn.text, syn.z = syn.images.double(), syn.text.double(), syn.z.double()
    syn.log_alpha = syn.log_alpha.double()
    syn.z += 0.3 * torch.randn_like(syn.z)  # P̃ away from the identity, so its gradient is not trivial
    start = model.flat_params().double()
    target = start + 0.01 * torch.randn_like(start)
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randperm(m, generator=gen)[:4] for _ in range(3)]
    return student, syn.requires_grad_(True), start, target, batches


def tiny_run_dir(tmp_path_factory) -> tuple:
    """(run_dir, RunConfig) of one tiny run with data and DTCL experts, made once per test session
    (the index, projection, image-decode and text-context tests share it)."""
    from mdw.config import RunConfig, apply_overrides
    from mdw.pipeline import stage_data, stage_experts
    from mdw.runs.context import run_in_context
    from mdw.runs.store import RunStore

    root = tmp_path_factory.getbasetemp() / "mdw-tiny-index-run"
    cfg = apply_overrides(RunConfig(), TINY_RUN + [f"cache_dir={root / 'cache'}"])
    marker = root / "run_dir.txt"
    if marker.exists():
        return marker.read_text(), cfg
    store = RunStore(str(root / "runs"))
    run_id = store.create(cfg.to_dict(), name="tiny-index")

    def body(ctx):
        for name, fn in (("data", stage_data), ("experts", stage_experts)):
            with ctx.stage(name):
                fn(ctx, cfg, lambda f, m="": None)

    assert run_in_context(store, run_id, body) == 0, store.read_status(run_id)["error"]
    marker.write_text(store.run_dir(run_id))
    return store.run_dir(run_id), cfg


# ----- the planted model: Grad-CAM and attribution maps with a known answer -----

class PlantedTower(nn.Module):
    """The spatial map is the mean colour of 8x8 cells (no parameters); the embedding its mean."""
    output_dim = 3

    def forward_with_features(self, x):
        feats = F.avg_pool2d(x, 8)
        return feats.mean((2, 3)), feats

    def forward_features(self, x):
        return self.forward_with_features(x)[1]

    def forward(self, x):
        return self.forward_with_features(x)[0]


PLANTED_CAPTION = "A red square, and a green square."


def planted_model():
    """Image tower = cell colours; h (linear) maps the words red/green/blue to the R/G/B axes."""
    from mdw.models.model import MDWModel
    from mdw.models.text import FrozenTextEncoder
    from mdw.models.towers import Normalize

    text = FrozenTextEncoder(embed_dim=3, proj_type="linear")
    m = MDWModel(PlantedTower(), text, Normalize((0, 0, 0), (1, 1, 1)), "planted", 32).eval()
    tf = text.token_features([PLANTED_CAPTION])[0]
    names = [w.text for w in tf.words]
    feats = torch.stack([tf.word_features()[names.index(c)] for c in ("red", "green", "square")])   # (3, 384)
    with torch.no_grad():
        text.proj.weight.copy_(torch.linalg.pinv(feats).T)  # W f = e: red -> R, green -> G, square -> B
    return m


def planted_image(seed=0):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0.0, 0.08, size=(32, 32, 3))
    img[0:8, 0:8] = (1.0, 0.05, 0.05)      # red cell: top left
    img[24:32, 16:24] = (0.05, 1.0, 0.05)  # green cell: bottom, third column
    return (img * 255).astype(np.uint8)

# ----- files for the readers' tests: tiny images, Flickr8k-style folders, Karpathy JSON, shards -----

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
