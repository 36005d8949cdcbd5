"""Benchmark tables: rows from separate bench runs merge by case, never silently duplicated or lost."""
import pytest
import json
import os

from mdw.bench import cases
from mdw.bench import distill as bench

from helpers import bench_row as _row


def test_distill_bench_merge_keeps_other_cases_and_replaces_remeasured_ones(tmp_path):
    cfg = bench.DistillBenchConfig(out_dir=str(tmp_path), ms={"scenes": [20]}, merge=True)
    first = [_row("scenes", 0.4, 20, "random", 4.0), _row("scenes", 0.4, 20, "mdw", 10.0),
             _row("scenes", 0.4, None, "expert-dtcl", 40.0)]
    memory = [{"dataset": "memory", "eta": None, "M": 50, "method": "matching-adjoint", "peak_mib": 1500.0}]
    bench.write(cfg, first, memory, 1.0)
    bench.write(cfg, first, memory, 1.0)           # a partial write of the same run: no duplicate config
    second_cfg = bench.DistillBenchConfig(out_dir=str(tmp_path), ms={"scenes": [50]}, merge=True, iterations=60,
                                          note="new experts", runs_dir=str(tmp_path / "bench-runs"))
    second = [_row("scenes", 0.4, 50, "random", 5.0), _row("scenes", 0.4, 50, "mdw", 11.0),
              _row("scenes", 0.4, None, "expert-dtcl", 41.0)]
    summary, paths = bench.write(second_cfg, second, [], 2.0)
    rows = json.loads(open(paths[0]).read())
    cases = sorted((r["dataset"], r["eta"], r["M"] or 0, r["method"]) for r in rows)
    assert cases == [("memory", None, 50, "matching-adjoint"), ("scenes", 0.4, 0, "expert-dtcl"),
                     ("scenes", 0.4, 20, "mdw"), ("scenes", 0.4, 20, "random"),
                     ("scenes", 0.4, 50, "mdw"), ("scenes", 0.4, 50, "random")]
    assert [r["mean_recall"] for r in rows if r["method"] == "expert-dtcl"] == [41.0]   # the newer measurement
    runs = json.loads(open(paths[1]).read())["config"]["runs"]
    assert [r["ms"] for r in runs] == [{"scenes": [20]}, {"scenes": [50]}]
    assert runs[1]["runs_dir"] == "bench-runs" and str(tmp_path / "bench-runs") not in open(paths[1]).read()
    md = open(paths[2]).read()
    assert "- scenes M=20, η 0.0, 0.4: 200 iterations" in md and "- scenes M=50, η 0.0, 0.4: 60 iterations" in md
    assert "syn_batch 50" in md and md.count("new experts") == 1
    assert len(summary) == 2 and "M=20" in summary[0] and "2.50×" in summary[0] and "M=50" in summary[1]
    # a re-run of M = 20 replaces its rows, keeps M = 50
    bench.write(cfg, [_row("scenes", 0.4, 20, "random", 3.0), _row("scenes", 0.4, 20, "mdw", 9.0)], [], 1.0)
    rows = json.loads(open(paths[0]).read())
    assert sorted((r["M"], r["mean_recall"]) for r in rows if r["method"] == "mdw") == [(20, 9.0), (50, 11.0)]
    assert [r["mean_recall"] for r in rows if r["method"] == "expert-dtcl"] == [41.0]   # not measured: kept


def test_the_table_lists_only_the_runs_that_still_own_rows():
    run = lambda ms, etas, memory=(), note="": {"ms": ms, "etas": etas, "memory_steps": list(memory), "note": note}
    runs = [run({"scenes": [20, 50]}, [0.4], [4, 16], "first"), run({"scenes": [20]}, [0.0, 0.4], [], "second"),
            run({"scenes": [50]}, [0.4], [], "third"), run({"flickr8k": [100]}, [0.4], [], "fourth")]
    # the first's cases are all measured again, but its memory rows are still the table's
    assert [c["note"] for c in bench.live_runs(runs)] == ["first", "second", "third", "fourth"]
    runs.append(run({"scenes": [20]}, [0.0, 0.4], [4], "fifth"))
    assert [c["note"] for c in bench.live_runs(runs)] == ["third", "fourth", "fifth"]


def test_distill_bench_passes_its_batch_sizes_to_the_runs():
    cfg = bench.DistillBenchConfig(syn_batch=50, student_batch=100, iterations=7)
    rc = bench.parent_config(cfg, "scenes", 0.4)
    assert (rc.distill.syn_batch, rc.evaluate.batch_size, rc.distill.iterations) == (50, 100, 7)
    assert rc.data.eta == 0.4 and not rc.heatmaps.enabled
    rc = bench.parent_config(bench.DistillBenchConfig(syn_batch=0, student_batch=0), "flickr8k", 0.0)
    assert (rc.distill.syn_batch, rc.evaluate.batch_size, rc.data.source) == (0, 0, "flickr8k")
    assert rc.evaluate.alpha_scale == 1.0
    cfg = bench.DistillBenchConfig(alpha_scale=4.0, ms={"scenes": [20]}, etas=[0.4], iterations=7, seeds=5)
    assert bench.parent_config(cfg, "scenes", 0.4).evaluate.alpha_scale == 4.0
    assert "4 × their learned α" in bench.run_line(bench.recorded(cfg))
    assert "learned α" not in bench.run_line(bench.recorded(bench.DistillBenchConfig()))
    one, eight = bench.recorded(bench.DistillBenchConfig()), bench.recorded(cfg)
    assert bench._scale_text([one]) == ""
    assert bench._scale_text([eight, eight]).startswith("Distilled sets' students step at 4 × their learned α")
    assert "each run below names" in bench._scale_text([one, eight])


@pytest.mark.parametrize("key, value, text, bad", [
    ("ceo_floor", 0.5, "CEO's λ (distill.ceo_floor) 0.5", 1.5),
    ("syn_steps", 16, "N = 16 student steps per matching (distill.syn_steps)", 0)])
def test_distill_bench_sets_a_distill_setting_only_when_asked(key, value, text, bad):
    from mdw.config import ConfigError, DistillConfig
    default = bench.parent_config(bench.DistillBenchConfig(), "scenes", 0.4)
    assert getattr(default.distill, key) == getattr(DistillConfig(), key)
    assert f"(distill.{key})" not in bench.run_line(bench.recorded(bench.DistillBenchConfig()))
    cfg = bench.DistillBenchConfig(**{key: value}, ms={"scenes": [20]}, etas=[0.4], iterations=7, seeds=5)
    assert getattr(cases.child_config(bench.parent_config(cfg, "scenes", 0.4), 20).distill, key) == value
    assert text in bench.run_line(bench.recorded(cfg))
    with pytest.raises(ConfigError, match=key):
        bench.parent_config(bench.DistillBenchConfig(**{key: bad}), "scenes", 0.4)


def test_distill_bench_passes_any_other_distill_setting_typed_and_checked():
    from mdw.config import ConfigError, parse_setting
    cfg = bench.DistillBenchConfig(distill={"expert_epochs": 3, "max_start_epoch": 3, "images_optimizer": "sgd"},
                                   ms={"scenes": [20]}, etas=[0.4], seed=1)
    d = cases.child_config(bench.parent_config(cfg, "scenes", 0.4), 20).distill
    assert (d.expert_epochs, d.max_start_epoch, d.images_optimizer, d.syn_steps) == (3, 3, "sgd", 8)
    assert "distill.expert_epochs 3, distill.images_optimizer sgd, distill.max_start_epoch 3" in bench.run_line(
        bench.recorded(cfg))
    for bad, named in (({"expert_epochs": "three"}, "distill.expert_epochs"), ({"nope": 1}, "distill.nope"),
                       ({"iterations": 5}, "--iterations"), ({"m": 5}, "--datasets")):
        with pytest.raises(ConfigError, match=named):
            bench.parent_config(bench.DistillBenchConfig(distill=bad), "scenes", 0.4)
    assert [parse_setting(s, "--distill") for s in ("ceo=false", "lr_images=0.01", "images_optimizer=sgd")] == [
        ("ceo", False), ("lr_images", 0.01), ("images_optimizer", "sgd")]
    with pytest.raises(ConfigError, match="--distill 'K3'"):
        parse_setting("K3", "--distill")
    # a run seed at another K is another setting: never paired with one at the default
    default = bench.DistillBenchConfig(ms={"scenes": [20]}, etas=[0.4], seed=0)
    own = bench.settings_of([bench.recorded(default), bench.recorded(cfg)], bench.recorded(bench.DistillBenchConfig()))
    assert own[("scenes", 0.4, 20, 0)] != own[("scenes", 0.4, 20, 1)]
    # one setting however it is written: flag order, 1 or 1.0, a default given explicitly
    same = lambda a, b: (bench.settings_of([bench.recorded(bench.DistillBenchConfig(distill=a))], {})   # noqa: E731
                         == bench.settings_of([bench.recorded(bench.DistillBenchConfig(distill=b))], {}))
    assert same({"expert_epochs": 3, "ceo": False}, {"ceo": False, "expert_epochs": 3})
    assert same({"lr_images": 1}, {"lr_images": 1.0}) and same({"expert_epochs": 2}, {})
    assert not same({"expert_epochs": 3}, {})
    with pytest.raises(ConfigError, match="--methods"):          # which experts is each method's own
        bench.parent_config(bench.DistillBenchConfig(distill={"experts": "plain"}), "scenes", 0.4)


def test_a_bad_distill_setting_stops_the_bench_before_it_makes_a_folder(tmp_path, monkeypatch):
    from mdw.config import ConfigError
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    for runs_dir in ("", str(tmp_path / "runs")):   # a temporary folder or the user's own
        cfg = bench.DistillBenchConfig(distill={"expert_epochs": "three"}, ms={"scenes": [20]}, etas=[0.4],
                                       runs_dir=runs_dir, out_dir=str(tmp_path / "out"), memory_steps=[])
        with pytest.raises(ConfigError, match="distill.expert_epochs"):
            bench.run(cfg, log=lambda *a: None)
        small = bench.DistillBenchConfig(ms={"scenes": [20, 1]}, etas=[0.4], runs_dir=runs_dir,
                                         out_dir=str(tmp_path / "out"), memory_steps=[])
        with pytest.raises(ConfigError, match="m >= 2"):   # M = 1 found before the experts train, not after
            bench.run(small, log=lambda *a: None)
    assert os.listdir(tmp_path / "tmp") == [] and not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_bench_commands_turn_their_flags_into_the_bench_configs(monkeypatch):
    # `bench detection` once read args.ceo_floor, a flag only `bench distill` has (AttributeError)
    from mdw.bench import detection
    from mdw.cli.main import main
    seen = {}

    def record(name):   # the benches themselves are measured elsewhere; here only the configs they get
        def run(cfg, log=print):
            seen[name] = cfg
            return [], "", ["table"]
        return run
    monkeypatch.setattr(detection, "run", record("detection"))
    monkeypatch.setattr(bench, "run", record("distill"))
    assert main(["bench", "detection", "--datasets", "scenes", "--etas", "0.4", "--scenes-train", "200"]) == 0
    assert seen["detection"].datasets == ["scenes"] and seen["detection"].scenes.n_train == 200
    main(["bench", "distill", "--datasets", "scenes:20", "--etas", "0.4", "--ceo-floor", "0.5", "--alpha-scale", "8",
          "--syn-steps", "16", "--run-seed", "2", "--distill", "expert_epochs=3", "--distill", "ceo=false"])
    assert (seen["distill"].ceo_floor, seen["distill"].alpha_scale, seen["distill"].ms) == (0.5, 8.0, {"scenes": [20]})
    assert seen["distill"].syn_steps == 16 and seen["distill"].seed == 2
    assert seen["distill"].distill == {"expert_epochs": 3, "ceo": False}


def test_detection_bench_merge_keeps_the_other_data_sets(tmp_path):
    from mdw.bench import detection
    from mdw.bench.report import write_results
    first = detection.DetectionBenchConfig(out_dir=str(tmp_path), datasets=["scenes"], merge=True)
    rows = [{"dataset": "scenes", "eta": 0.4, "method": "dtcl", "auc": 0.98}]
    summary = {"breaking_point": {"scenes": 0.6}}
    write_results(str(tmp_path), "detection", rows, {"datasets": ["scenes"], "summary": summary}, "")
    second = detection.DetectionBenchConfig(out_dir=str(tmp_path), datasets=["flickr8k"], merge=True)
    new = [{"dataset": "flickr8k", "eta": 0.4, "method": "dtcl", "auc": 0.9},
           {"dataset": "flickr8k", "eta": 0.0, "method": "dtcl", "auc": None}]
    merged, config, summ = detection.merge_previous(second, new, {"datasets": ["flickr8k"]},
                                                    {"breaking_point": {"flickr8k": 0.4}})
    assert [(r["dataset"], r["auc"]) for r in merged] == [("scenes", 0.98), ("flickr8k", 0.9), ("flickr8k", None)]
    assert summ == {"breaking_point": {"scenes": 0.6, "flickr8k": 0.4}}
    assert set(config["runs"]) == {"scenes", "flickr8k"}
    # re-measuring scenes replaces its rows
    again, _, _ = detection.merge_previous(first, [{"dataset": "scenes", "eta": 0.4, "method": "dtcl", "auc": 0.97}],
                                           {"datasets": ["scenes"]}, {"breaking_point": {"scenes": 0.5}})
    assert [(r["dataset"], r["auc"]) for r in again] == [("scenes", 0.97)]


def test_index_bench_tunes_each_index_to_the_target_recall():
    from mdw.bench import index
    cfg = index.IndexBenchConfig(queries=50, threads=1)
    rows = index.bench_size(3000, cfg, log=lambda s: None)
    by = {r["method"]: r for r in rows}
    assert set(by) == {"exact", "ivf", "hnsw"} and by["exact"]["recall@10"] == 1.0
    assert by["ivf"]["recall@10"] >= cfg.target_recall and by["hnsw"]["recall@10"] >= cfg.target_recall
    assert all(r["n"] == 3000 and r["build_s"] >= 0 for r in rows)


def test_expert_rows_appear_once_per_case_however_many_m():
    rows = []
    for m in (20, 100):
        rows = bench.add_rows(rows, [_row("scenes", 0.0, m, "mdw", 7.0), _row("scenes", 0.0, None, "expert-dtcl", 47.0),
                                     _row("scenes", 0.4, None, "expert-dtcl", 44.0)])
    assert sorted((r["eta"], r["M"] or 0, r["method"]) for r in rows) == [
        (0.0, 0, "expert-dtcl"), (0.0, 20, "mdw"), (0.0, 100, "mdw"), (0.4, 0, "expert-dtcl")]


def test_detection_table_header_names_each_merged_runs_settings():
    import dataclasses
    from mdw.bench import detection
    from mdw.config import ExpertConfig
    old = dataclasses.asdict(detection.DetectionBenchConfig(datasets=["flickr8k"], flickr8k_epochs=3))
    old["experts"] = {k: v for k, v in old["experts"].items() if k != "optimizer"}   # recorded before SGD experts
    old["experts"]["lr"] = 0.001
    new = dataclasses.asdict(detection.DetectionBenchConfig(datasets=["scenes"], experts=ExpertConfig(epochs=6)))
    md = detection.render([], {"flickr8k": old, "scenes": new},
                          {"breaking_point": {"scenes": None}, "sweep_minutes": {"scenes": 11.0}})
    assert "- flickr8k 3 epochs: adam, lr 0.001," in md
    assert "- scenes 1000/100/300 images, 6 epochs: sgd, lr 0.03," in md


def test_summary_compares_mdw_with_the_strongest_baseline_and_its_start():
    row = lambda method, mr, std: {"dataset": "scenes", "eta": 0.4, "M": 20, "method": method, "arch": "cpu-small",
                                   "mean_recall": mr, "mean_recall_std": std}
    rows = [row("mdw", 15.0, 0.5), row("random", 5.0, 0.5), row("mtt-vl", 6.0, 1.0), row("clean-coreset", 17.5, 1.0),
            row("mdw-init", 9.0, 1.5), row("ladder-p", 16.0, 1.0)]
    (line,) = bench.summarise(rows)
    assert "vs the strongest baseline (clean-coreset, 17.50) 0.86× (target ≥ 1.15×: missed)" in line
    assert "vs mdw-init +4.0 std (target > +2)" in line and "vs clean-coreset -2.5 std" in line
    assert line.endswith("methods at or above MDW: clean-coreset, ladder-p")


def test_summary_leaves_out_comparisons_with_rows_not_measured():
    # a Flickr8k case run without mtt-vl, lors and random printed "vs best of MTT-VL/LoRS +nan%"
    row = lambda method, mr: {"dataset": "flickr8k", "eta": 0.4, "M": 100, "method": method, "arch": "cpu-small",
                              "mean_recall": mr, "mean_recall_std": 0.1}
    (line,) = bench.summarise([row("mdw", 2.4), row("clean-coreset", 1.0), row("filter-mtt-vl", 1.1)])
    assert "nan" not in line and "MTT-VL/LoRS" not in line and "vs random" not in line
    assert line.startswith("flickr8k η=0.4 M=100: MDW mean recall 2.40; vs the strongest baseline (filter-mtt-vl, 1.10) 2.18×")
    (line,) = bench.summarise([row("mdw", 2.4), row("random", 1.2), row("lors", 0.8)])
    assert "vs best of MTT-VL/LoRS +200.0%; vs random 2.00×" in line


def test_benchmark_configs_record_no_machine_path(tmp_path):
    from mdw.bench.report import portable, write_results
    from mdw.runs.manager import repo_root
    inside = os.path.join(repo_root(), "docs", "benchmarks")
    cfg = {"out_dir": inside, "runs_dir": str(tmp_path / "bench16"), "paths": [str(tmp_path / "a.json"), "rel/x"],
           "nested": {"experts": "/somewhere/else/experts"}, "n": 3, "text": "a /b c"}
    assert portable(cfg) == {"out_dir": os.path.join("docs", "benchmarks"), "runs_dir": "(local path)/bench16",
                             "paths": ["(local path)/a.json", "rel/x"],
                             "nested": {"experts": "(local path)/experts"}, "n": 3, "text": "a /b c"}
    paths = write_results(str(tmp_path), "x", [{"method": "m", "v": 1.0}], cfg, "# x\n")
    text = open(paths[1]).read()
    assert str(tmp_path) not in text and repo_root() not in text


def test_cases_measured_over_more_than_one_run_are_listed_by_run_and_old_rows_are_not():
    row = lambda method, run, m=20: {"dataset": "scenes", "eta": 0.8, "M": m, "run_seed": 0, "method": method,   # noqa: E731
                                     **({"measured_in": run} if run else {})}
    rows = [row("random", "a"), row("mdw", "a"), row("ladder-p", "b"), row("mdw", "c", 50), row("random", "c", 50),
            row("random", None, 8), row("ladder-p", None, 8)]
    assert bench.mixed_cases(rows) == ["scenes η 0.8, M 20, run seed 0: random, mdw measured in run a; "
                                       "ladder-p measured in run b"]


def test_benchmark_configs_name_the_cpu_model_their_seconds_were_measured_on(tmp_path):
    import platform
    from mdw.bench.report import cpu_model, write_results
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n"
                    "\nprocessor\t: 1\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n")
    assert cpu_model(str(info)) == "AMD EPYC 9R14 96-Core Processor"
    fallback = platform.processor() or platform.machine()
    assert cpu_model(str(tmp_path / "absent")) == fallback
    info.write_text("processor\t: 0\nmodel name\t:\n")          # an empty model name is not a model
    assert cpu_model(str(info)) == fallback
    paths = write_results(str(tmp_path), "x", [{"method": "m", "v": 1.0}], {"n": 1}, "# x\n")
    assert json.load(open(paths[1]))["environment"]["cpu"] == cpu_model()


def test_a_rerun_with_an_absolute_data_path_is_not_recorded_twice(tmp_path):
    # the table stores paths machine-free, so comparing the raw config never matched: each partial
    # write of one run added it again to the table's runs
    from mdw.bench.report import write_results
    cfg = bench.DistillBenchConfig(ms={"flickr8k": [100]}, etas=[0.4], out_dir=str(tmp_path),
                                   flickr8k_path=str(tmp_path / "flickr8k"), merge=True)
    other = dict(bench.recorded(bench.DistillBenchConfig()), note="an earlier run")
    row = {"dataset": "flickr8k", "eta": 0.4, "M": 100, "method": "mdw", "mean_recall": 2.0}
    write_results(str(tmp_path), "distill", [row], {"runs": [other, bench.recorded(cfg)]}, "# x\n")
    _, _, earlier = bench.merge_previous(cfg, [row], [])
    assert [c["note"] for c in earlier] == ["an earlier run"]


def test_distill_bench_expert_epochs_per_data_set_reach_the_parent_run():
    cfg = bench.DistillBenchConfig(ms={"scenes": [20]})
    cfg.epochs = dict(cfg.epochs, **bench.parse_epochs("flickr8k:8"))
    assert cfg.epochs == {"scenes": 6, "flickr8k": 8}
    assert bench.parent_config(cfg, "flickr8k", 0.4).experts.epochs == 8
    assert bench.parent_config(cfg, "scenes", 0.4).experts.epochs == 6
    for bad in ("flickr8k", "coco:3", "scenes:0", "scenes:x"):
        with pytest.raises(ValueError, match="--epochs"):
            bench.parse_epochs(bad)
