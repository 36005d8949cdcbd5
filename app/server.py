"""Starting and stopping the workbench as a subprocess (the browser tests and scripts/bench_app.py):
`python -m app --runs RUNS --port PORT --no-demo` (or with a demo config), answering on 127.0.0.1 when `start_app` returns."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Debian's chromium (never a downloaded browser) and its flags for Playwright, headless
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# What each tab shows first once its run is finished (issue 17: no blank first views), as
# (screenshot name, tab label, selector, text it contains, selector of an image or plot that must be drawn);
# tests/test_app_first_sight.py checks them and scripts/screenshots.py waits for them.
FIRST_CONTENT = [
    ("runs", "Runs", "#run-status", "stage", "#run-losses .js-plotly-plot"),
    ("noisy", "Noisy pairs", "#noisy-desc", "clean score", "#noisy-heat img"),
    ("correspondence", "Correspondence", "#corr-note", "s(v, t)", "#corr-p .js-plotly-plot"),
    ("evolution", "Evolution", "#evo-caption", "amplified", "#evo-change img"),
    ("embedding", "Embedding map", "#emb-sample-text", "distilled pair", "#emb-sample img"),
    ("retrieval", "Retrieval", "#ret-text-msg", "its own image", "#ret-gallery img"),
    ("audit", "Audit", "#audit-current", "distilled pair", "#audit-nearest table"),
]
APP_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "TRANSFORMERS_OFFLINE": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(runs: str, port: int, *extra: str, log_path: Optional[str] = None,
              timeout: float = 120.0, demo_config: str = "") -> subprocess.Popen:
    """The app serving `runs` on 127.0.0.1:port; RuntimeError (naming the log) if it exits or stays silent.
    With `demo_config` (a run config file) the app starts that demo run when `runs` is empty; else --no-demo."""
    env = dict(os.environ, PYTHONPATH=REPO, **APP_ENV)
    out = open(log_path, "w", encoding="utf-8") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives with the app
    demo = ["--demo-config", demo_config] if demo_config else ["--no-demo"]
    proc = subprocess.Popen([sys.executable, "-m", "app", "--runs", runs, "--port", str(port), *demo, *extra],
                            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    where = f"; see {log_path}" if log_path else ""
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}{where}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return proc
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    stop_app(proc)
    raise RuntimeError(f"the app did not answer on port {port} within {timeout:.0f} s{where}")


def stop_app(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
