"""FAISS retrieval indexes: exact = brute force, approximate recall floor, a run's index/ and the
query API (library and CLI), model specs (experts and students), clear errors."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mdw.cli.main import main as cli_main
from mdw.errors import ConfigError, DataError, RunError
from mdw.evaluate import ann
from mdw.evaluate.index import RunIndex, build_run_index, load_model, parse_spec, resolve_spec
from mdw.evaluate.retrieval import recall_at_k, recall_brute_force
from mdw.evaluate.view_config import IndexConfig
from mdw.runs.store import read_json

from helpers import tiny_run_dir

APPROX_RECALL_FLOOR = 0.9   # recall@10 of the tuned approximate index against the exact one


def clustered(n: int, d: int = 32, centres: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    x = c[rng.integers(0, centres, n)] + 0.6 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run_dir(tmp_path_factory)


def test_faiss_search_equals_numpy_brute_force():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(500, 48)).astype(np.float32)
    queries = rng.normal(size=(40, 48)).astype(np.float32)
    scores, ids = ann.search(ann.exact_index(base), queries, 7)
    sim = queries @ base.T
    top = np.argsort(-sim, axis=1)[:, :7]
    assert np.array_equal(ids, top)
    assert np.allclose(scores, np.take_along_axis(sim, top, 1), atol=1e-4)
    # recall of a split: the FAISS path and plain numpy agree
    img = clustered(60, 16, seed=2)
    txt = clustered(180, 16, seed=3)
    owner = rng.integers(0, 60, 180)
    fast, slow = recall_at_k(img, txt, owner), recall_brute_force(img, txt, owner)
    assert all(fast[k] == pytest.approx(slow[k]) for k in slow)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall_above_floor(kind):
    base, queries = clustered(6000, seed=4), clustered(200, seed=5)
    _, exact_ids = ann.search(ann.exact_index(base), queries, 10)
    index = ann.approximate_index(base, kind, hnsw_m=16, nlist=64)
    depth, rec = ann.tune_depth(index, exact_ids, queries, 10, target=0.95)
    assert rec >= APPROX_RECALL_FLOOR and depth >= 1
    assert ann.approx_recall(index, exact_ids, queries, 10) == pytest.approx(rec)
    assert ann.overlap_recall(exact_ids, exact_ids) == 1.0


def test_model_specs():
    assert parse_spec("expert") == ("expert", None, "A")
    assert parse_spec("expert:plain:B") == ("expert", "plain", "B")
    assert parse_spec("student:mdw") == ("student", "mdw", 0)
    assert parse_spec("student:random:3") == ("student", "random", 3)
    for bad in ("teacher", "expert:foo", "student", "student:mdw:x"):
        with pytest.raises(ConfigError):
            parse_spec(bad)


def test_run_index_query_and_reload(tiny, tmp_path):
    run_dir, cfg = tiny
    meta = build_run_index(run_dir, cfg)
    assert meta["kind"] == "exact" and meta["model_resolved"] == "expert:dtcl:A"
    for name in ("images.faiss", "captions.faiss", "image_emb.npy", "caption_emb.npy", "images_u8.npy",
                 "items.json", "meta.json"):
        assert os.path.isfile(os.path.join(run_dir, "index", name)), name
    assert not [f for f in os.listdir(os.path.join(run_dir, "index")) if ".tmp-" in f]
    ri = RunIndex.load(run_dir)
    assert ri.image_emb.shape == (meta["n_images"], meta["dim"]) and len(ri.items["captions"]) == meta["n_captions"]
    assert ri.recall() == pytest.approx(meta["recall"])
    hits = ri.query_text("a red circle", k=5)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    q = ri.embed_text("a red circle")[0]
    assert [h["image"] for h in hits] == np.argsort(-(ri.image_emb @ q))[:5].tolist()
    assert np.allclose([h["score"] for h in hits], np.sort(ri.image_emb @ q)[::-1][:5], atol=1e-5)
    # an image file as the query finds what the stored embedding of that image finds
    path = tmp_path / "q.png"
    Image.fromarray(ri.image_u8(3)).save(path)
    by_file = ri.query_image(str(path), k=4)
    assert [h["caption_idx"] for h in by_file] == [h["caption_idx"] for h in ri.image_hits(3, k=4)]
    assert by_file[0]["caption"] == ri.items["captions"][by_file[0]["caption_idx"]]
    assert len(ri.query_image(ri.image_u8(3).astype(np.float32) / 255.0, k=100)) == meta["n_captions"]
    with pytest.raises(DataError, match="no such image"):
        ri.query_image(str(tmp_path / "missing.png"))
    with pytest.raises(DataError, match="empty"):
        ri.query_text("  ")


def test_approximate_run_index(tiny):
    run_dir, cfg = tiny
    meta = build_run_index(run_dir, cfg, IndexConfig(exact_max=10, approx="hnsw"))
    assert meta["kind"] == "approximate" and meta["images"]["depth"] == "efSearch"
    assert meta["images"]["recall@10_vs_exact"] >= 0.95 and meta["captions"]["recall@10_vs_exact"] >= 0.95
    ri = RunIndex.load(run_dir)
    assert ann.get_depth(ri.image_index) == meta["images"]["value"]
    assert len(ri.caption_hits(0, k=3)) == 3


def test_student_spec_cli_and_errors(tiny, tmp_path, capsys):
    run_dir, cfg = tiny
    final = torch.load(os.path.join(run_dir, "experts", "dtcl", "final_A.pt"))
    meta = read_json(os.path.join(run_dir, "experts", "dtcl", "meta.json"))
    path = os.path.join(run_dir, "eval", "students", "mdw", "seed1.pt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"params": final["params"], "buffers": final["buffers"], "preset": meta["preset"],
                "embed_dim": meta["embed_dim"], "image_size": meta["image_size"]}, path)
    student, expert = load_model(run_dir, "student:mdw:1"), load_model(run_dir, "expert:dtcl:A")
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(student.encode_image(x), expert.encode_image(x), atol=1e-5)
    with pytest.raises(RunError, match="no student 'mdw' seed 0"):
        load_model(run_dir, "student:mdw")
    with pytest.raises(RunError, match="no plain experts"):
        load_model(run_dir, "expert:plain")
    with pytest.raises(RunError, match="no experts"):
        resolve_spec(str(tmp_path), "expert")
    # the CLI: build with the student, then query by text and by image
    assert cli_main(["query", "--run", run_dir, "--build", "--model", "student:mdw:1", "--recall"]) == 0
    out = capsys.readouterr().out
    assert "student:mdw:1" in out and "IR@1" in out
    assert cli_main(["query", "--run", run_dir, "--text", "a blue square", "--k", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["query"] == {"text": "a blue square"} and len(res["hits"]) == 3 and "key" in res["hits"][0]
    img = tmp_path / "q.png"
    Image.fromarray(RunIndex.load(run_dir).image_u8(0)).save(img)
    assert cli_main(["query", "--run", run_dir, "--image", str(img), "--k", "2"]) == 0
    assert "1." in capsys.readouterr().out
    assert cli_main(["query", "--run", run_dir, "--image", str(tmp_path / "nope.jpg")]) == 2
    assert "nope.jpg" in capsys.readouterr().err
