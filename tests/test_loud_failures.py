"""No silent wrong result (issue 15): a diverging loop stops its stage with a named error and writes
no NaN set or result row; events stay strict JSON; DTCL does not split pure noise; an empty split
the run needs stops the data stage with a DataError naming the split and the fix."""
import json
import os

import numpy as np
import pytest
import torch

from helpers import run_tiny
from mdw.cli.main import main as cli_main
from mdw.config import DataConfig, EvalConfig, ModelConfig, RunConfig
from mdw.data.prepare import prepare
from mdw.data.readers import hash_split
from mdw.data.tables import read_table
from mdw.distill.synset import DistilledSet
from mdw.errors import DataError, DivergenceError
from mdw.evaluate.students import StudentData, train_student
from mdw.runs.store import RunStore, read_jsonl
from mdw.runs.view import RunView
from mdw.train.dtcl import equal_batches
from mdw.train.gmm import LossGMM


def strict_lines(path) -> list:
    """Every line parsed by a strict JSON parser (bare NaN / Infinity rejected)."""
    def reject(token):
        raise ValueError(f"non-standard JSON token {token}")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line, parse_constant=reject) for line in f if line.strip()]


def tiny_run(tmp_path, *extra, until=None):
    return run_tiny(tmp_path, *extra, until=until, name="loud")


# ----- 2. divergence ---------------------------------------------------------------------------------

def test_diverging_distillation_fails_the_run_and_writes_no_nan_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MDW_CACHE", str(tmp_path / "cache"))
    store, run_id, code = tiny_run(tmp_path, "distill.lr_alpha=100")
    status = store.read_status(run_id)
    assert code == 1 and status["state"] == "failed" and status["stage"] == "distill"
    assert "DivergenceError" in status["error"]
    msg = status["message"]
    assert "distill" in msg and "iteration 1" in msg and "step size α" in msg and "distill.lr_alpha (now 100)" in msg
    run_dir = store.run_dir(run_id)
    assert not os.path.exists(os.path.join(run_dir, "distill", "distilled.pt"))
    assert not os.path.exists(os.path.join(run_dir, "eval", "results.json"))
    for name in os.listdir(os.path.join(run_dir, "distill", "snapshots")):
        if name.endswith(".pt"):   # only the start (iteration 0) can have been written, and it is finite
            assert name == "it_00000.pt"
            assert all(torch.isfinite(t).all() for t in DistilledSet.load(os.path.join(run_dir, "distill", "snapshots", name)).tensors())
    events = strict_lines(os.path.join(run_dir, "events.jsonl"))
    assert not [e for e in events if e["stage"] == "distill"]     # the NaN iteration left no L_TM row


def test_diverging_experts_stop_with_epoch_track_and_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("MDW_CACHE", str(tmp_path / "cache"))
    store, run_id, code = tiny_run(tmp_path, "experts.lr=1e30", "experts.grad_clip=0", until="experts")
    status = store.read_status(run_id)
    assert code == 1 and status["state"] == "failed" and status["stage"] == "experts"
    msg = status["message"]
    assert msg.startswith("experts: ") and "epoch 1, track A" in msg and "experts.lr (now 1e+30)" in msg
    assert not os.path.exists(os.path.join(store.run_dir(run_id), "experts", "dtcl", "meta.json"))


def test_diverging_student_stops_with_a_named_error():
    g = torch.Generator().manual_seed(0)
    data = StudentData(torch.rand(6, 3, 32, 32, generator=g), torch.randn(6, 384, generator=g), torch.eye(6),
                       alpha=torch.tensor([1e30, 1e30, 1e30]), learned_alpha=True)
    with pytest.raises(DivergenceError) as e:
        train_student(data, ModelConfig(device="cpu"), 32, EvalConfig(steps=5), seed=3)
    assert e.value.stage == "evaluate" and "student seed 3" in e.value.at and "learned α" in str(e.value)


def test_a_student_diverging_at_a_scaled_alpha_names_the_scale():
    """α itself is fine (1e-3); 1e33 × it is not: the error points at evaluate.alpha_scale."""
    g = torch.Generator().manual_seed(0)
    data = StudentData(torch.rand(6, 3, 32, 32, generator=g), torch.randn(6, 384, generator=g), torch.eye(6),
                       alpha=torch.tensor([1e-3, 1e-3, 1e-3]), learned_alpha=True)
    train_student(data, ModelConfig(device="cpu"), 32, EvalConfig(steps=5), seed=3)   # k = 1 trains
    with pytest.raises(DivergenceError) as e:
        train_student(data, ModelConfig(device="cpu"), 32, EvalConfig(steps=5, alpha_scale=1e33), seed=3)
    assert "evaluate.alpha_scale 1e+33" in str(e.value) and "lower evaluate.alpha_scale" in str(e.value)


def test_a_nan_distilled_set_is_never_written_nor_taught(tmp_path):
    from mdw.evaluate.students import from_distilled
    syn = DistilledSet(torch.rand(2, 3, 8, 8), torch.randn(2, 4), torch.zeros(2, 2), torch.tensor([0.0, float("inf"), 0.0]),
                       np.array([0, 1]))
    with pytest.raises(DivergenceError, match="not finite"):
        syn.save(str(tmp_path / "d.pt"))
    assert os.listdir(tmp_path) == []
    with pytest.raises(DivergenceError, match="reading the distilled set"):
        from_distilled(syn)


def test_events_and_json_files_are_strict_json(tmp_path):
    store = RunStore(str(tmp_path / "runs"))
    run_id = store.create(RunConfig().to_dict(), name="j")
    store.append_event(run_id, "experts", 1, auc=float("nan"), loss=float("inf"), rows=[1.0, float("-inf")])
    e = strict_lines(os.path.join(store.run_dir(run_id), "events.jsonl"))[-1]
    assert e["auc"] is None and e["loss"] is None and e["rows"] == [1.0, None]
    assert read_jsonl(os.path.join(store.run_dir(run_id), "events.jsonl"))[-1]["auc"] is None


# ----- 3. DTCL does not split pure noise ---------------------------------------------------------

def test_gmm_does_not_split_losses_without_signal():
    rng = np.random.default_rng(0)
    flat = np.log(128) + rng.normal(0, 1e-7, 1000)
    g = LossGMM.fit(flat)
    assert not g.split and (g.posterior(flat) < 0.5).sum() == 0 and "equal to within" in g.reason
    gauss = 4.85 + rng.normal(0, 0.3, 5000)                 # one population, any spread
    g = LossGMM.fit(gauss)
    assert not g.split and "one Gaussian" in g.reason and (g.posterior(gauss) == 1).all()
    two = np.r_[rng.gamma(2, 0.5, 600), 4.5 + rng.normal(0, 0.4, 400)]   # two populations: split
    g = LossGMM.fit(two)
    w = g.posterior(two)
    assert g.split and 350 < (w < 0.5).sum() < 450 and (w[600:] < 0.5).mean() > 0.95
    assert LossGMM.from_dict(g.to_dict()) == g


@pytest.mark.parametrize("n,b", [(242, 32), (64, 64), (65, 64), (10, 64), (1000, 128)])
def test_scoring_batches_are_all_the_same_size_and_cover_every_pair_once(n, b):
    batches = equal_batches(n, b, seed=1)
    assert {len(idx) for idx, _ in batches} == {min(n, b)}
    scored = np.concatenate([idx[len(idx) - new:] for idx, new in batches])
    assert np.array_equal(np.sort(scored), np.arange(n))


def test_collapsed_experts_flag_nothing_and_warn(tmp_path, monkeypatch):
    monkeypatch.setenv("MDW_CACHE", str(tmp_path / "cache"))
    store, run_id, code = tiny_run(tmp_path, "experts.lr=1000", until="experts")
    assert code == 0
    run_dir = store.run_dir(run_id)
    epochs = [e for e in strict_lines(os.path.join(run_dir, "events.jsonl")) if e["stage"] == "experts"]
    assert epochs and all(e["flagged"] == 0 for e in epochs)
    assert all(e["warning"].startswith("no noise split this epoch: track A") for e in epochs)
    banner = RunView(run_dir).noise_split_note()
    assert banner.startswith("no noise split this epoch: track A: ") and "none flagged" in banner
    assert RunView(run_dir).scores()["flag"].sum() == 0
    from app.context import AppContext
    from app.tab_noisy import load_pairs
    table, _, _, summary, _ = load_pairs(AppContext(str(tmp_path / "runs")), run_id, "all", "all", 0, 1, page_size=500)
    assert summary.startswith("⚠️ **no noise split this epoch: track A") and len(table) == 242
    assert load_pairs(AppContext(str(tmp_path / "runs")), run_id, "flagged", "all", 0, 1)[0] == []


# ----- 4. empty evaluation splits ------------------------------------------------------------------

def _images(folder, names):
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    for i, n in enumerate(names):
        Image.new("RGB", (12, 10), (40 * i % 256, 80, 120)).save(os.path.join(folder, n))


def test_flickr_folder_without_a_test_list_stops_the_data_stage(tmp_path):
    names = [f"{c}.jpg" for c in "abcd"]
    _images(tmp_path / "images", names)
    (tmp_path / "captions.tsv").write_text("image\tcaption\n" + "".join(f"{n}\ta photo {n}\n" for n in names))
    (tmp_path / "train.txt").write_text("".join(n + "\n" for n in names))
    cfg = DataConfig(source="flickr8k", path=str(tmp_path))
    with pytest.raises(DataError) as e:
        prepare(cfg, str(tmp_path / "cache"))
    assert "the test split is empty" in str(e.value) and "test.txt" in str(e.value) and str(tmp_path) in str(e.value)


def test_csv_without_test_rows_stops_and_inspect_warns(tmp_path, capsys):
    names = [f"p{i}.png" for i in range(4)]
    _images(tmp_path, names)
    path = tmp_path / "t.csv"
    path.write_text("image,caption,split\n" + "".join(f"{n},a photo {n},{'train' if i < 3 else 'dev'}\n"
                                                       for i, n in enumerate(names)))
    with pytest.raises(DataError, match=r"the test split is empty .*split=test"):
        prepare(DataConfig(source="csv", path=str(path)), str(tmp_path / "cache"))
    assert cli_main(["data", "inspect", str(path)]) == 0
    assert "warning: the test split is empty (a run needs it" in capsys.readouterr().out
    assert cli_main(["data", "inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"][0].startswith("the test split is empty")


def test_small_table_without_split_column_gets_a_test_split(tmp_path):
    names = [n for n in (f"img{i}.png" for i in range(40)) if hash_split(n) == "train"][:5]
    assert len(names) == 5                       # every image hashes to train
    _images(tmp_path, names)
    path = tmp_path / "t.csv"
    path.write_text("image,caption\n" + "".join(f"{n},a photo {n}\n" for n in names))
    ps = read_table(str(path))
    assert sorted(ps.image_split) == ["dev", "test", "train", "train", "train"]
    assert list(read_table(str(path)).image_split) == list(ps.image_split)            # deterministic
    p = prepare(DataConfig(source="csv", path=str(path)), str(tmp_path / "cache"))
    assert p.pairs.counts()["test"]["pairs"] == 1
