"""`python -m mdw bench heatmaps` end to end on a tiny scenes set: the run-default expert row, and
experts saved once and reused (same rows without retraining)."""
import dataclasses
import json

import pytest
import torch

from mdw.bench import heatmaps as hb
from mdw.bench.heatmap_experts import expert_key
from mdw.config import ExpertConfig, ScenesConfig


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_bench_scores_the_run_default_expert_and_reuses_saved_experts(tmp_path, cache_dir):
    cfg = hb.HeatmapBenchConfig(scenes=ScenesConfig(n_train=40, n_dev=2, n_test=4), image_size=32,
                                max_test_pairs=6, cache_dir=cache_dir, out_dir=str(tmp_path / "out"),
                                experts_dir=str(tmp_path / "experts"))
    cfg.experts = dataclasses.replace(cfg.experts, epochs=1, batch_size=32)
    logs: list = []
    rows, summary, paths = hb.run(cfg, log=logs.append)
    by = {r["method"]: r for r in rows}
    assert hb.RUN_DEFAULT in by and by[hb.RUN_DEFAULT]["n_words"] == by["expert"]["n_words"] > 0
    assert 0 <= by[hb.RUN_DEFAULT]["pointing_all"] <= 100
    assert summary["run_default_pointing"] == by[hb.RUN_DEFAULT]["pointing_all"]
    # the run-default expert is trained exactly as `mdw run` trains it: ExpertConfig() unchanged
    saved = sorted(p.name for p in (tmp_path / "experts").iterdir())
    assert saved == sorted([f"dtcl-sgd-{expert_key(cfg, ExpertConfig())}.pt",
                            f"plain-adam-{expert_key(cfg, cfg.experts)}.pt"])
    recorded = json.load(open(paths[1]))["config"]
    assert recorded["experts_dir"] == "" and recorded["run_default_experts"] == dataclasses.asdict(ExpertConfig())
    # a second run reuses both experts: no training, the same numbers
    again, _, _ = hb.run(cfg, log=logs.append)
    assert sum("reused" in m for m in logs) == 2
    assert [r["pointing_all"] for r in again] == [r["pointing_all"] for r in rows]
    # a changed setting is a different expert
    assert expert_key(cfg, dataclasses.replace(cfg.experts, lr=0.002)) != expert_key(cfg, cfg.experts)
