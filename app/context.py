"""What every tab shares: the runs folder, one RunManager, validated run ids and cached views.

Run ids come from the browser: every one goes through RunStore.run_dir (which rejects bad ids,
dot-dot and symlinked folders) before any file of it is read.
"""
from __future__ import annotations

import os
import threading

import plotly.graph_objects as go

from mdw.config import demo_config_path
from mdw.errors import RunError
from mdw.runs.manager import RunManager
from mdw.runs.migrate import open_run
from mdw.runs.view import RunView
from mdw.runs.view_distill import DistillView
from mdw.views.runs import short_label


class AppContext:
    def __init__(self, runs_dir: str, max_running: int = 1, demo_config: str = ""):
        self.runs_dir = os.path.abspath(runs_dir)
        self.demo_config = demo_config or demo_config_path()   # the run started in an empty runs folder
        os.makedirs(self.runs_dir, exist_ok=True)
        self.manager = RunManager(self.runs_dir, max_running=max_running)
        self.store = self.manager.store
        self._lock = threading.Lock()
        self._views: dict = {}

    # ----- runs -----------------------------------------------------------------------------
    def run_dir(self, run_id) -> str:
        """The folder of an existing run; RunError for a bad id or an unknown run."""
        if not run_id:
            raise RunError("no run selected")
        d = self.store.run_dir(run_id)
        if not self.store.exists(run_id):
            raise RunError(f"no run {run_id!r}")
        return d

    def run_choices(self) -> list:
        """(short label, id) of every run, newest first."""
        return [(f"{short_label(r['id'])}  [{r['state']}]", r["id"]) for r in self.store.list_runs()]

    def default_run(self) -> str | None:
        """A running run if there is one (reattach), else the newest run."""
        runs = self.store.list_runs()
        for r in runs:
            if r["state"] in ("running", "queued"):
                return r["id"]
        return runs[0]["id"] if runs else None

    def views(self, run_id) -> tuple:
        """(RunView, DistillView) of a run, cached until its status.json changes."""
        d = self.run_dir(run_id)
        lay = open_run(d)   # upgrades an older run before the stamp is taken (it may rewrite status.json)
        stamp = os.stat(lay.status).st_mtime_ns
        with self._lock:
            hit = self._views.get(run_id)
            if hit is None or hit[0] != stamp:
                hit = (stamp, RunView(d), DistillView(d))
                self._views[run_id] = hit
            return hit[1], hit[2]

    def cached(self, key, stamp, make):
        """make() once per (key, stamp): for objects that are slow to load (indexes, models)."""
        with self._lock:
            hit = self._views.get(("cached", key))
            if hit is not None and hit[0] == stamp:
                return hit[1]
        value = make()
        with self._lock:
            self._views[("cached", key)] = (stamp, value)
        return value

    def view(self, run_id) -> RunView:
        return self.views(run_id)[0]

    def distill_view(self, run_id) -> DistillView:
        return self.views(run_id)[1]


def message_figure(text: str) -> go.Figure:
    """An empty plotly figure carrying a message (for 'not computed yet')."""
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def error_text(e: Exception) -> str:
    return f"⚠️ {e}"
