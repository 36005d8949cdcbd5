"""A finished tiny run folder made by the real pipeline, built once per test session and shared by
the app's handler and browser tests, and helpers to serve the app on a free port."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from helpers import TINY_RUN

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 90.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def start_app(runs: str, port: int, *extra) -> subprocess.Popen:
    """`python -m app` serving `runs` on 127.0.0.1:port, as a subprocess (answering when returned)."""
    env = dict(os.environ, PYTHONPATH=REPO, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "app", "--runs", runs, "--port", str(port), "--no-demo", *extra],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
    except AssertionError:
        stop_app(proc)
        raise
    return proc


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
