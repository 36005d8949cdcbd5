"""A finished tiny run folder made by the real pipeline, built once per test session and shared by
the app's handler and browser tests, and helpers to serve the app on a free port."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

from helpers import TINY_RUN

from app.server import free_port, start_app, stop_app  # noqa: F401 - the tests import them from here

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=1)
def tiny_run() -> tuple:
    """(runs folder, run id, cache folder) of one finished tiny pipeline run."""
    from mdw.config import RunConfig, apply_overrides
    from mdw.runs.manager import RunManager
    root = tempfile.mkdtemp(prefix="mdw-app-tests-")
    atexit.register(shutil.rmtree, root, True)
    cache = os.path.join(root, "cache")
    os.makedirs(cache)
    os.environ["MDW_CACHE"] = cache  # the workers and the app's views read the same cache
    mgr = RunManager(os.path.join(root, "runs"))
    run_id = mgr.create_and_start(apply_overrides(RunConfig(), TINY_RUN).to_dict(), name="tiny")
    status = mgr.wait(run_id, timeout=300)
    assert status["state"] == "done", status
    add_views(mgr.store.run_dir(run_id))
    return mgr.store.root, run_id, cache


def add_views(run_dir: str) -> None:
    """The retrieval index and the embedding map, when the pipeline did not make them itself."""
    from mdw.config import RunConfig
    from mdw.evaluate.index import build_run_index
    from mdw.evaluate.projection import project_run
    from mdw.runs.store import read_json
    cfg = RunConfig.from_dict(read_json(os.path.join(run_dir, "config.json")))
    if not os.path.isfile(os.path.join(run_dir, "index", "meta.json")):
        build_run_index(run_dir, cfg)
    if not os.path.isfile(os.path.join(run_dir, "projection", "points.npz")):
        project_run(run_dir, cfg)


def copy_runs(dest: str) -> tuple:
    """A private copy of the tiny run's folder under dest/runs: (runs folder, run id)."""
    src, run_id, _ = tiny_run()
    runs = os.path.join(dest, "runs")
    shutil.copytree(src, runs)
    return runs, run_id


