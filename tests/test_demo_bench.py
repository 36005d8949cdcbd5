"""`python -m mdw bench demo` (issue 17): a fresh demo process timed stage by stage, and the demo
config's story (the distilled set beside the random coreset and the strongest selection baseline)."""
import json

from mdw.bench import demo
from mdw.config import RunConfig, apply_overrides, demo_config_path
from mdw.pipeline import stage_names

from helpers import TINY_RUN


def test_demo_config_tells_the_story():
    cfg = RunConfig.load(demo_config_path())
    methods = cfg.evaluate.methods
    assert "random" in methods and "mdw" in methods
    assert "clean-coreset" in methods or "mdw-init" in methods   # what selection alone gives


def test_bench_demo_times_a_fresh_run_stage_by_stage(tmp_path):
    cfg = apply_overrides(RunConfig(), TINY_RUN + ["model.device=cpu", "evaluate.methods=random,mdw"])
    config = tmp_path / "tiny.json"
    config.write_text(cfg.to_json())
    med, paths = demo.run(demo.DemoBenchConfig(config=str(config), repeats=1, app_repeats=0, threads=1,
                                               out_dir=str(tmp_path / "out")))
    rows = json.loads(open(paths[0]).read())
    assert len(rows) == 1
    row = rows[0]
    stages = [f"{n}_s" for n in stage_names()]
    assert all(row[s] >= 0 for s in stages)
    assert row["total_s"] >= sum(row[s] for s in stages)   # the process includes every stage
    assert 0.0 <= row["dtcl_auc"] <= 1.0
    assert 0.0 <= row["recall_mdw"] <= 100.0 and 0.0 <= row["recall_random"] <= 100.0
    assert med["total_s"] == row["total_s"]
    md = open(paths[2]).read()
    assert ("**met**" in md) == (row["total_s"] <= demo.TARGET_S)


def test_the_demo_table_says_whether_distillation_beats_selection():
    told = demo.story({"recall_mdw": 10.5, "recall_random": 7.0, "recall_clean-coreset": 12.0, "recall_mdw-init": 8.0})
    assert "`clean-coreset`" in told and "below it (0.88×)" in told and "(1.50×)" in told
    told = demo.story({"recall_mdw": 9.0, "recall_random": 6.0, "recall_mdw-init": 7.5})
    assert "`mdw-init`" in told and "above it (1.20×)" in told
    assert demo.story({"recall_mdw": 9.0, "recall_random": 6.0}) == ""   # no selection baseline: nothing claimed
