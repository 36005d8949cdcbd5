"""The run layout: one place names a run's files, one rule says which experts a run has, and one
migration point upgrades an older run on open."""
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from app_helpers import copy_runs
from mdw.config import RunConfig
from mdw.runs.layout import FORMAT_VERSION, RunLayout
from mdw.runs.migrate import migrate, open_run
from mdw.runs.store import RunStore, file_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def make_old(lay: RunLayout) -> dict:
    """Rewrite a current run into the format-1 form; returns the score arrays the old readers'
    fallbacks produced ({kind: {"wA", "wB", "flag"}})."""
    os.remove(lay.format)
    cfg = _json(lay.config)
    cfg["distill"]["learn_p"] = cfg["distill"].pop("labels") == "soft"
    del cfg["index"], cfg["projection"]
    del cfg["heatmaps"]["shifts"]
    _write(lay.config, cfg)
    status = _json(lay.status)
    del status["stage_seconds"]
    _write(lay.status, status)
    expected = {}
    for kind in lay.scored_kinds():
        with np.load(lay.scores(kind)) as z:
            arrays = {k: z[k] for k in z.files if k not in ("wA", "wB", "flag")}
        c = arrays["consensus"]
        expected[kind] = {"wA": c, "wB": c, "flag": c < 0.5}
        np.savez_compressed(lay.scores(kind), **arrays)
    for kind in lay.expert_kinds():
        meta = _json(lay.experts(kind).meta)
        del meta["gmm"]
        _write(lay.experts(kind).meta, meta)
    import torch
    for path in [lay.distilled, *lay.snapshots_dir.glob("*.pt")]:       # sets saved before labels/meta
        state = torch.load(path, weights_only=True)
        assert state["labels"] == "soft"
        torch.save({k: v for k, v in state.items() if k not in ("labels", "meta")}, path)
    if lay.heatmap_maps.is_file():                                       # maps saved before the text counts
        with np.load(lay.heatmap_maps) as z:
            np.savez_compressed(lay.heatmap_maps, **{k: z[k] for k in z.files if k not in ("words_encoded", "words_total")})
    return expected


@pytest.fixture
def old_run(tmp_path):
    runs, run_id = copy_runs(str(tmp_path))
    lay = RunLayout(os.path.join(runs, run_id))
    labels = _json(lay.config)["distill"]["labels"]
    return lay, make_old(lay), labels


def test_old_run_is_upgraded_on_open_and_the_views_read_it(old_run):
    from mdw.runs.view import RunView
    from mdw.runs.view_distill import DistillView
    lay, expected, labels = old_run
    assert lay.format_version() == 1 and expected
    view = RunView(lay.root)                                  # opening upgrades
    assert lay.format_version() == FORMAT_VERSION == _json(lay.format)["format"]
    cfg = _json(lay.config)
    assert "learn_p" not in cfg["distill"] and cfg["distill"]["labels"] == labels
    assert cfg == RunConfig.from_dict(cfg).to_dict()          # every section and key present
    assert cfg["index"] == RunConfig().to_dict()["index"] and cfg["heatmaps"]["shifts"] == RunConfig().heatmaps.shifts
    assert _json(lay.status)["stage_seconds"] == {}
    assert all(_json(lay.experts(k).meta)["gmm"] == {} for k in lay.expert_kinds())
    for kind, want in expected.items():
        with np.load(lay.scores(kind)) as z:
            for name, arr in want.items():
                assert np.array_equal(z[name], arr), (kind, name)
    rows = view.pair_rows()
    assert rows and all(r["track_A"] == r["track_B"] == r["clean"] for r in rows)
    assert sum(r["flagged"] for r in rows) == int((view.scores()["consensus"] < 0.5).sum())
    assert view.noise_split_note() == ""
    assert DistillView(lay.root).results() and view.config()["distill"]["labels"] == labels
    import torch
    assert torch.load(lay.distilled, weights_only=True)["labels"] == "soft" and DistillView(lay.root).distilled().m > 0
    with np.load(lay.heatmap_maps) as z:
        assert (z["words_encoded"] == -1).all() and len(z["words_total"]) == len(z["item_id"])
    assert view.heatmap_items() and view.heatmap_item(0) is not None


def test_open_run_is_idempotent(old_run):
    lay, _, _ = old_run
    assert migrate(lay) is True
    stamps = {p: os.stat(p).st_mtime_ns for p in (lay.config, lay.status, lay.format, *map(lay.scores, lay.scored_kinds()))}
    assert migrate(lay) is False                               # already at FORMAT_VERSION: nothing touched
    os.remove(lay.format)                                      # a migration killed before its last write:
    assert migrate(lay) is True                                # every step runs again and changes nothing
    assert {p: os.stat(p).st_mtime_ns for p in stamps if p != lay.format} == \
        {p: s for p, s in stamps.items() if p != lay.format}
    assert open_run(lay.root) == lay and lay.format_version() == FORMAT_VERSION


def test_a_second_process_waits_for_the_migration_lock(old_run):
    lay, _, _ = old_run
    code = f"import sys; sys.path.insert(0, {REPO!r}); from mdw.runs.migrate import open_run; open_run({os.fspath(lay.root)!r})"
    with file_lock(lay.migrate_lock):                          # this process "is migrating"
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
        time.sleep(3.0)
        assert proc.poll() is None and lay.format_version() == 1   # it waits; nothing written
    assert proc.wait(timeout=120) == 0
    assert lay.format_version() == FORMAT_VERSION and "learn_p" not in _json(lay.config)["distill"]


def test_new_runs_are_current(tmp_path):
    store = RunStore(str(tmp_path / "runs"))
    run_id = store.create(RunConfig().to_dict(), name="new")
    lay = store.layout(run_id)
    assert lay.format_version() == FORMAT_VERSION and migrate(lay) is False
    assert RunLayout(tmp_path / "not-a-run").format_version() == 1 and migrate(RunLayout(tmp_path)) is False


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()


@pytest.mark.parametrize("on_disk, want", [
    ((), {None: None, True: None, False: None}),
    (("dtcl",), {None: "dtcl", True: "dtcl", False: "dtcl"}),
    (("plain",), {None: "plain", True: "plain", False: "plain"}),
    (("dtcl", "plain"), {None: "dtcl", True: "dtcl", False: "plain"}),
    (("filtered",), {None: None, True: None, False: None}),    # filtered experts are never the run's own
])
def test_main_expert_kind(tmp_path, on_disk, want):
    lay = RunLayout(tmp_path)
    for k in on_disk:
        _touch(lay.experts(k).meta)
    assert lay.expert_kinds() == list(on_disk)
    assert {d: lay.main_expert_kind(d) for d in want} == want
    scored = RunLayout(tmp_path / "scores-only")              # scores without meta.json count too
    for k in on_disk:
        _touch(scored.scores(k))
    assert {d: scored.main_expert_kind(d) for d in want} == want


RUN_FILES = ("status.json", "events.jsonl", "results.json", "distilled.pt", "meta.json", "pairs.json",
             "scores.npz", "decoded.json", "decisions.jsonl", "format.json", "maps.npz", "points.npz",
             "filter.json", "reference.pt")


def test_no_run_file_is_named_outside_the_layout():
    pattern = re.compile(r"""["'](?:[\w./-]*/)?(%s)["']""" % "|".join(map(re.escape, RUN_FILES)))
    hits = []
    for top in ("mdw", "app", "scripts"):
        for root, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                path = os.path.join(root, name)
                rel = os.path.relpath(path, REPO)
                if not name.endswith(".py") or rel == os.path.join("mdw", "runs", "layout.py"):
                    continue
                with open(path, encoding="utf-8") as f:
                    for i, line in enumerate(f, 1):
                        if pattern.search(line):
                            hits.append(f"{rel}:{i}: {line.strip()}")
    assert not hits, "run files named outside mdw/runs/layout.py:\n" + "\n".join(hits)
