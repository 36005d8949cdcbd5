"""The worker side of a run: `run_in_context(store, run_id, body)` runs body(ctx) with the run's
status kept true (running → done | failed | cancelled), SIGTERM turned into a clean cancel, and
stages that finished remembered so a resumed run skips them."""
from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from typing import Callable, Optional

from ..errors import Cancelled, RunError
from .manager import pid_alive
from .migrate import open_run
from .store import RunStore, _now


class RunContext:
    """What stage code sees of its run: config, its files (`layout`, a RunLayout), stages, events,
    progress and the log. Opening the context upgrades an older run first (migrate.open_run)."""

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id
        self.run_dir = store.run_dir(run_id)
        self.layout = open_run(self.run_dir)
        self.config = store.read_config(run_id)
        self.current_stage: Optional[str] = None
        self._last_progress = 0.0

    def path(self, *parts) -> str:
        """A path inside the run folder (its parent folders made); never outside it. Stage code names
        the run's files through `self.layout`; this checks a relative path from elsewhere."""
        p = self.store.path(self.run_id, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def stage_done(self, name: str) -> bool:
        return name in self.store.read_status(self.run_id)["stages_done"]

    @contextmanager
    def stage(self, name: str):
        self.current_stage = name
        self.store.write_status(self.run_id, stage=name, progress=0.0, message="")
        self.log(f"stage {name}: started")
        t0 = time.time()
        try:
            yield self
        except BaseException as e:
            kind = "cancelled" if isinstance(e, (Cancelled, KeyboardInterrupt)) else "failed"
            self.log(f"stage {name}: {kind} after {time.time() - t0:.1f} s")
            raise
        seconds = round(time.time() - t0, 1)
        self.store.update_status(self.run_id, lambda s: {
            **s, "progress": 1.0, "message": "",
            "stages_done": s["stages_done"] + ([name] if name not in s["stages_done"] else []),
            "stage_seconds": {**(s.get("stage_seconds") or {}), name: seconds}})
        self.log(f"stage {name}: done in {seconds:.1f} s")

    def event(self, step: int, **metrics) -> None:
        self.store.append_event(self.run_id, self.current_stage, step, **metrics)

    def progress(self, frac: float, message: str = "") -> None:
        """Fraction of the current stage done; written at most ~4 times a second."""
        now = time.monotonic()
        if now - self._last_progress < 0.25 and 0.0 < frac < 1.0:
            return
        self._last_progress = now
        self.store.write_status(self.run_id, progress=round(float(frac), 4), message=message)

    def log(self, text: str) -> None:
        self.store.log(self.run_id, text)


def _raise_cancelled(signum, frame):
    raise Cancelled("cancel requested (SIGTERM)")


def run_in_context(store: RunStore, run_id: str, body: Callable[[RunContext], None]) -> int:
    """Run body(ctx) as the run's worker; returns the process exit code (0 done, 1 failed,
    130 cancelled). The status says what happened; a failure keeps its traceback. Raises RunError
    (status untouched) when another live worker already runs it (e.g. `run --resume` beside the app)."""
    def claim(s):
        pid = s.get("pid")
        if s.get("state") == "running" and pid and int(pid) != os.getpid() and pid_alive(pid, run_id):
            raise RunError(f"run {run_id} is already running (worker pid {pid}); wait for it, or cancel it first")
        return {**s, "state": "running", "pid": os.getpid(), "started": _now(), "ended": None, "error": None,
                "message": ""}
    store.update_status(run_id, claim)   # under the run's status lock: one worker per run
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_cancelled) if main else None
    ctx = RunContext(store, run_id)
    try:
        ctx.log(f"run {run_id}: started (pid {os.getpid()})")
        body(ctx)
    except (Cancelled, KeyboardInterrupt):
        store.write_status(run_id, state="cancelled", ended=_now(), message="cancelled")
        ctx.log("run cancelled")
        return 130
    except BaseException as e:  # noqa: BLE001 - every failure is recorded, then reported
        text = f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}"
        store.write_status(run_id, state="failed", ended=_now(), error=text, message=str(e)[:200])
        ctx.log(f"run failed: {text}")
        return 1
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    store.write_status(run_id, state="done", ended=_now(), progress=1.0, message="")
    ctx.log("run done")
    return 0
