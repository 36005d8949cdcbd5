"""Two writers, one folder (issue 15): pollers in two processes launch a queued run exactly once, and
two processes appending to one run's heatmap store lose nothing and never show a reader maps and an
index that disagree."""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np

from mdw.runs.manager import repo_root
from mdw.runs.store import RunStore

POLLER = """\
import os, sys, time
from mdw.runs.manager import RunManager

root, marker, go = sys.argv[1:4]
WORKER = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + chr(10))"
m = RunManager(root, max_running=100,
               worker_argv=lambda run_id: [sys.executable, "-c", WORKER, marker, run_id])
while not os.path.exists(go):
    time.sleep(0.005)
deadline = time.monotonic() + 20
while time.monotonic() < deadline and any(r["state"] == "queued" for r in m.store.list_runs()):
    m.poll()
m.poll()
"""

APPENDER = """\
import sys
import numpy as np
from mdw.heatmaps.compute import WordMaps
from mdw.heatmaps.store import append_items, pack

run_dir, group, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(first)
for k in range(50):
    n_words = 1 + k % 3
    wm = WordMaps(f"{group} item {k}", [f"w{j}" for j in range(n_words)], list(range(n_words)),
                  rng.uniform(0, 1, (n_words, 8, 8)).astype(np.float32), np.zeros(n_words, np.float32), 0.5)
    append_items(run_dir, pack(group, [first + k], rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8), [wm]),
                 replace_groups=False)
"""


def spawn(tmp_path, name, code, *args):
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(code))
    env = dict(os.environ, PYTHONPATH=repo_root(), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env)


def test_two_pollers_launch_each_queued_run_once(tmp_path):
    root, marker, go = tmp_path / "runs", tmp_path / "launches.txt", tmp_path / "go"
    store = RunStore(root)
    ids = [store.create({}, name=f"r{i}") for i in range(12)]
    pollers = [spawn(tmp_path, f"poller{k}", POLLER, root, marker, go) for k in range(2)]
    time.sleep(0.5)  # both are waiting at the barrier
    go.touch()
    assert [p.wait(timeout=60) for p in pollers] == [0, 0]
    deadline = time.monotonic() + 20  # the workers append their line and exit
    while time.monotonic() < deadline and (not marker.exists() or len(marker.read_text().split()) < len(ids)):
        time.sleep(0.05)
    time.sleep(0.3)  # a second launch, if any, would have written by now
    launches = marker.read_text().split()
    assert sorted(launches) == sorted(ids)  # every run launched, none twice
    assert all(store.read_status(i)["state"] != "queued" for i in ids)


def test_two_processes_append_heatmaps_without_losing_any(tmp_path):
    from mdw.heatmaps.store import read_store

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    writers = [spawn(tmp_path, f"writer{g}", APPENDER, run_dir, g, first)
               for g, first in (("a", 0), ("b", 1000))]
    seen = 0
    while any(w.poll() is None for w in writers):  # a reader meanwhile: the pair always agrees
        index, packed = read_store(str(run_dir))
        if packed:
            assert [it["item_id"] for it in index["items"]] == packed["item_id"].tolist()
            assert index["n_words"] == len(packed["words"]) == packed["word_start"][-1]
            seen += 1
    assert [w.returncode for w in writers] == [0, 0]
    index, packed = read_store(str(run_dir))
    assert sorted(packed["item_id"].tolist()) == list(range(50)) + list(range(1000, 1050))
    assert index["groups"] == {"a": 50, "b": 50} and index["n_items"] == 100
    assert [it["item_id"] for it in index["items"]] == packed["item_id"].tolist()
    for it in index["items"]:  # every item's words are its own rows of the maps
        a, b = packed["word_start"][it["row"]], packed["word_start"][it["row"] + 1]
        assert it["words"] == packed["words"][a:b].tolist() == [f"w{j}" for j in range(b - a)]
    assert packed["maps"].shape == (len(packed["words"]), 8, 8) and seen > 0
    assert np.array_equal(np.sort(packed["item_id"]), np.unique(packed["item_id"]))


def test_a_second_worker_is_refused_while_the_first_lives(tmp_path):
    """`mdw run --resume ID` beside the app's worker: the second claim fails and changes nothing."""
    import pytest

    from mdw.config import RunConfig
    from mdw.errors import RunError
    from mdw.runs.context import run_in_context
    store = RunStore(str(tmp_path / "runs"))
    run_id = store.create(RunConfig().to_dict(), name="held")
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", run_id])
    try:
        store.write_status(run_id, state="running", pid=first.pid)
        with pytest.raises(RunError, match=f"already running \\(worker pid {first.pid}\\)"):
            run_in_context(store, run_id, lambda ctx: None)
        assert store.read_status(run_id)["state"] == "running" and store.read_status(run_id)["pid"] == first.pid
    finally:
        first.kill()
        first.wait()
    assert run_in_context(store, run_id, lambda ctx: None) == 0     # a dead worker's claim is stale
    assert store.read_status(run_id)["state"] == "done"
