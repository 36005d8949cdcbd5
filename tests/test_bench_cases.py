"""`bench distill` reruns measure only what is missing: finished cases are read back, stopped ones
resumed, and a finished case given more methods is extended (only the new methods run) with the
numbers the whole case would give."""
import dataclasses
import json
import os

import pytest

from mdw.bench import cases
from mdw.bench import distill as bench
from mdw.config import ScenesConfig
from mdw.runs.store import RunStore


def tiny_bench(root, methods, runs="runs") -> bench.DistillBenchConfig:
    return bench.DistillBenchConfig(
        ms={"scenes": [8]}, etas=[0.4], methods=methods, iterations=2, seeds=1, student_steps=5, syn_batch=8,
        student_batch=8, syn_steps=2, scenes=ScenesConfig(n_train=60, n_dev=10, n_test=20),
        epochs={"scenes": 1, "flickr8k": 1}, memory_steps=[], runs_dir=str(root / runs), out_dir=str(root / f"out-{runs}"))


def results(store, run_id) -> list:
    with open(store.layout(run_id).eval_results) as f:
        return json.load(f)["rows"]


def cases_in(root) -> list:
    return sorted(r["id"] for r in RunStore(str(root)).list_runs() if "-m8-" in r["id"])


def test_a_finished_case_given_more_methods_runs_only_those_and_matches_the_whole_case(tmp_path, monkeypatch):
    monkeypatch.setenv("MDW_CACHE", str(tmp_path / "cache"))
    first, _, _ = bench.run(tiny_bench(tmp_path, ["random", "mdw"]))
    [source] = cases_in(tmp_path / "runs")
    store = RunStore(str(tmp_path / "runs"))
    more = ["random", "clean-coreset", "mtt-vl", "mdw"]
    rows, _, _ = bench.run(tiny_bench(tmp_path, more))
    [extended] = [c for c in cases_in(tmp_path / "runs") if c != source]
    assert [r["method"] for r in rows] == more                         # the methods' order, not the runs'
    src, dst = store.layout(source), store.layout(extended)
    assert os.path.samefile(src.distilled, dst.distilled)             # MDW was not distilled again
    assert [r["method"] for r in results(store, source)] == ["random", "mdw"]   # the finished case untouched
    kept = {r["method"]: r for r in results(store, extended)}
    for r in results(store, source):                                   # its rows read back as they were
        assert kept[r["method"]] == r
    assert "measured here: clean-coreset, mtt-vl" in open(dst.log).read()
    assert store.read_status(extended)["extends"] == source
    # each row names the run that measured it, and the table lists the case's rows by run
    assert {r["method"]: r["measured_in"] for r in rows} == {"random": source, "clean-coreset": extended,
                                                             "mtt-vl": extended, "mdw": source}
    md = open(tmp_path / "out-runs" / "distill.md").read()
    assert (f"scenes η 0.4, M 8, run seed 0: random, mdw measured in run {source}; clean-coreset, mtt-vl "
            f"measured in run {extended}") in md
    assert dst.experts("plain").exists() and not src.experts("plain").exists()   # trained in it, from its data
    # the extension gives the numbers a whole case with every method gives (same experts' seed, data, students)
    whole, _, _ = bench.run(tiny_bench(tmp_path, more, runs="fresh"))
    key = lambda rs: [(r["method"], r["mean_recall"], r["IR@1"], r["TR@10"]) for r in rs]   # noqa: E731
    assert key(rows) == key(whole)
    assert {r["measured_in"] for r in whole} == {cases_in(tmp_path / "fresh")[0]}       # one run: no such section
    assert "more than one run" not in open(tmp_path / "out-fresh" / "distill.md").read()
    assert rows[0]["mean_recall"] == first[0]["mean_recall"]
    # the same command again reads the extended case back; fewer methods extend it with nothing to run
    bench.run(tiny_bench(tmp_path, more))
    assert cases_in(tmp_path / "runs") == sorted([source, extended])
    fewer, _, _ = bench.run(tiny_bench(tmp_path, ["mtt-vl", "mdw"]))
    assert [r["method"] for r in fewer] == ["mtt-vl", "mdw"] and key(fewer) == key(rows)[2:]
    newest = store.layout(cases_in(tmp_path / "runs")[-1])
    assert "measured here: none" in open(newest.log).read()
    with open(newest.eval_results) as f:                     # its table names the methods it was asked for
        assert json.load(f)["config"]["evaluate"]["methods"] == ["mtt-vl", "mdw"]
    # the source is the case with the most of the methods asked for, not the newest (the one just made)
    rc = cases.child_config(bench.parent_config(tiny_bench(tmp_path, more + ["lors"]), "scenes", 0.4), 8)
    current = lambda d: cases.shares_experts(d, rc, plain=False)   # noqa: E731
    assert cases.extendable_run(store, rc.to_dict(), has=current) == extended
    # a case whose data is no longer the data the source gives is neither reused nor extended
    for run_id in cases_in(tmp_path / "runs"):
        record = store.layout(run_id).data_record
        changed = dict(json.loads(record.read_text()), fingerprint="0" * 16)
        (record.parent / "new.json").write_text(json.dumps(changed))
        os.replace(record.parent / "new.json", record)       # this run's file only (the others link the old one)
    assert cases.extendable_run(store, rc.to_dict(), has=current) == ""
    more_rc = cases.child_config(bench.parent_config(tiny_bench(tmp_path, more), "scenes", 0.4), 8)
    assert cases.finished_run(store, more_rc.to_dict(), need=["evaluate"], has=current) == ""


def test_a_case_is_extended_only_from_one_whose_settings_equal_but_for_the_methods(tmp_path):
    store = RunStore(str(tmp_path))
    rc = cases.child_config(bench.parent_config(bench.DistillBenchConfig(iterations=7, methods=["random"]), "scenes", 0.4), 20)
    done = store.create(rc.to_dict())
    store.write_status(done, state="done", stages_done=["data", "experts", "distill", "evaluate"])
    more = dataclasses.replace(rc, evaluate=dataclasses.replace(rc.evaluate, methods=["random", "mtt-vl"]))
    assert cases.extendable_run(store, more.to_dict()) == done
    steps = dataclasses.replace(more, evaluate=dataclasses.replace(more.evaluate, steps=301))   # another protocol
    assert cases.extendable_run(store, steps.to_dict()) == ""
    seed = dataclasses.replace(more, seed=1)
    assert cases.extendable_run(store, seed.to_dict()) == ""
    with pytest.raises(ValueError, match="more than evaluate.methods"):
        cases.extend_run(store, done, seed)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(Exception):                                      # it has no result table to read back
        cases.extend_run(store, done, more)
    assert sorted(os.listdir(tmp_path)) == before                       # no half-built case left behind
    odd = store.create({**rc.to_dict(), "distill": {**rc.to_dict()["distill"], "learn_p": True}})   # an unknown key
    store.write_status(odd, state="done", stages_done=["data", "experts", "distill", "evaluate"])
    assert cases.extendable_run(store, more.to_dict()) == done          # skipped, not an error
    store.write_status(done, state="failed")                             # only a finished case
    assert cases.extendable_run(store, more.to_dict()) == ""


def test_a_rerun_reuses_finished_runs_with_the_same_config_only(tmp_path):
    import dataclasses
    import os

    from mdw.runs.store import RunStore

    store = RunStore(str(tmp_path))
    rc = bench.parent_config(bench.DistillBenchConfig(iterations=7), "scenes", 0.4)
    parent = store.create(rc.to_dict(), name=rc.name)
    assert cases.finished_run(store, rc.to_dict(), cases.EXPERT_KEYS, ["experts"]) == ""   # not finished
    store.write_status(parent, state="done", stages_done=["data", "experts"])
    # a changed distillation setting keeps the experts; a changed expert setting does not
    other = dataclasses.replace(rc, distill=dataclasses.replace(rc.distill, alpha_init="auto"))
    assert cases.finished_run(store, other.to_dict(), cases.EXPERT_KEYS, ["experts"]) == parent
    epochs = dataclasses.replace(rc, experts=dataclasses.replace(rc.experts, epochs=2))
    assert cases.finished_run(store, epochs.to_dict(), cases.EXPERT_KEYS, ["experts"]) == ""
    plain = lambda d: os.path.isfile(os.path.join(d, "experts", "plain", "meta.json"))
    assert cases.finished_run(store, rc.to_dict(), cases.EXPERT_KEYS, ["experts"], plain) == ""
    # a finished case is reused only under its whole config (here: M and the α start)
    child = store.create(cases.child_config(rc, 20).to_dict())
    store.write_status(child, state="done", stages_done=["data", "experts", "distill", "evaluate"])
    assert cases.finished_run(store, cases.child_config(rc, 20).to_dict(), need=["evaluate"]) == child
    assert cases.finished_run(store, cases.child_config(rc, 50).to_dict(), need=["evaluate"]) == ""
    assert cases.finished_run(store, cases.child_config(other, 20).to_dict(), need=["evaluate"]) == ""
    # a case stopped half way is resumed, one still running is not
    stopped = store.create(cases.child_config(rc, 50).to_dict())
    store.write_status(stopped, state="running", pid=None, stages_done=["data", "experts", "distill"])
    assert cases.interrupted_run(store, cases.child_config(rc, 50).to_dict()) == stopped
    store.write_status(stopped, pid=os.getpid())
    assert cases.interrupted_run(store, cases.child_config(rc, 50).to_dict()) == ""
    store.write_status(stopped, state="failed")
    assert cases.interrupted_run(store, cases.child_config(rc, 50).to_dict()) == stopped
    assert cases.interrupted_run(store, cases.child_config(other, 50).to_dict()) == ""


def test_experts_are_shared_only_over_the_same_data(tmp_path):
    import json as _json

    from mdw.config import apply_overrides
    from mdw.data.prepare import prepare
    from mdw.data.run_data import write_run_data
    from mdw.runs.layout import RunLayout

    rc = apply_overrides(bench.parent_config(bench.DistillBenchConfig(), "scenes", 0.4),
                         ["data.scenes.n_train=20", "data.scenes.n_dev=4", "data.scenes.n_test=4",
                          f"cache_dir={tmp_path / 'cache'}"])
    run_dir = tmp_path / "run"
    record = write_run_data(RunLayout(run_dir), prepare(rc.data, rc.resolved_cache_dir()), rc.data)
    assert cases.shares_experts(str(run_dir), rc, plain=False)
    assert not cases.shares_experts(str(run_dir), rc, plain=True)          # no plain experts in it
    record["fingerprint"] = "0" * 16                                         # its data came from elsewhere
    (run_dir / "data" / "pairs.json").write_text(_json.dumps(record))
    assert not cases.shares_experts(str(run_dir), rc, plain=False)


def test_a_case_recorded_before_a_key_was_added_is_still_the_same_case(tmp_path):
    """A stored config lacking a key that a later version added (with the old behaviour as its
    default) is the same case: a bench resumed across that change keeps its runs."""
    from mdw.runs.store import RunStore

    store = RunStore(str(tmp_path))
    rc = cases.child_config(bench.parent_config(bench.DistillBenchConfig(iterations=7), "scenes", 0.4), 20)
    old = rc.to_dict()
    del old["evaluate"]["coreset_lr_groups"]
    run_id = store.create(old)
    store.write_status(run_id, state="done", stages_done=["data", "experts", "distill", "evaluate"])
    assert cases.finished_run(store, rc.to_dict(), need=["evaluate"]) == run_id
    changed = rc.to_dict()
    changed["evaluate"]["coreset_lr_groups"] = [0.1, 0.3, 0.3]
    assert cases.finished_run(store, changed, need=["evaluate"]) == ""
