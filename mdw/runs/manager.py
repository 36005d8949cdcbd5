"""Starts, watches and cancels run workers (`python -m mdw run --resume ID`), each a subprocess of
its own session whose output goes to the run's log.txt. The runs folder is the only shared state:
a second manager (a reloaded app, the CLI) sees and can cancel runs the first one started.
At most `max_running` runs run at once; the rest wait in state `queued`, oldest first.

Many pollers, one launch: the app's page timers, its background thread, other app processes and
the CLI may all poll one runs folder. `poll` runs under the folder's lock (runs/.manager.lock) and
claims a queued run by one status update under the run's status lock that checks the state is still
`queued` (queued -> running, pid not yet known), then starts the worker and records its pid before
letting go of the folder's lock; `start` and `cancel` read the state under the same lock, so none
of them sees a claimed run whose worker is still being started."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable, Optional

from ..errors import RunError
from .store import FINAL_STATES, RunStore, _now, file_lock

MANAGER_LOCK = ".manager.lock"  # in the runs folder; not a run id, so list_runs skips it


def repo_root() -> str:
    """The folder that holds the `mdw` package (put on PYTHONPATH for workers)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pid_alive(pid: Optional[int], run_id: Optional[str] = None) -> bool:
    """Whether pid is a live (not zombie) process; with /proc, also that its command names run_id
    (a reused pid of some other program is not our worker)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = f"/proc/{int(pid)}"
    if os.path.isdir(proc):
        try:
            with open(f"{proc}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    return False
            if run_id is not None:
                with open(f"{proc}/cmdline", "rb") as f:
                    return run_id.encode() in f.read()
        except (OSError, IndexError):
            return False
    return True


def _exit_text(code: Optional[int]) -> str:
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class RunManager:
    def __init__(self, root, max_running: int = 1, worker_argv: Optional[Callable[[str], list]] = None):
        self.store = RunStore(root)
        self.max_running = max_running
        self.worker_argv = worker_argv or self.default_argv
        self._procs: dict = {}

    def default_argv(self, run_id: str) -> list:
        return [sys.executable, "-m", "mdw", "run", "--resume", run_id, "--runs", self.store.root]

    # ----- starting -------------------------------------------------------------------------
    def create_and_start(self, config: dict, name: Optional[str] = None) -> str:
        run_id = self.store.create(config, name=name)
        self.start(run_id)
        return run_id

    def start(self, run_id: str) -> dict:
        """Queue a new, failed or cancelled run (a resume: finished stages are kept); it starts
        as soon as a slot is free. RunError when it is running (its worker alive)."""
        with self._folder_locked():
            status = self.store.read_status(run_id)
            if status["state"] == "running" and self.is_alive(run_id):
                raise RunError(f"run {run_id} is already running (pid {status.get('pid')})")
            self.store.write_status(run_id, state="queued", pid=None, error=None, ended=None,
                                    message="waiting for a free slot")
        self.poll()
        return self.store.read_status(run_id)

    def _folder_locked(self):
        """The runs folder's lock (see the module docstring); not re-entrant."""
        return file_lock(os.path.join(self.store.root, MANAGER_LOCK))

    def _transition(self, run_id: str, from_state: str, **fields) -> bool:
        """Set `fields` when the run's state is still `from_state`, in one locked status update;
        whether it was (another writer may have moved the run on since it was last read)."""
        hit = []

        def fn(s):
            if s["state"] != from_state:
                return None
            hit.append(True)
            return {**s, **fields}
        self.store.update_status(run_id, fn)
        return bool(hit)

    def _launch(self, run_id: str) -> None:
        """Start the worker of a run this manager has claimed (state running, pid None)."""
        self.store.log(run_id, "worker starting")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root(), env.get("PYTHONPATH")) if p)
        try:
            with open(self.store.layout(run_id).log, "ab") as log:
                proc = subprocess.Popen(self.worker_argv(run_id), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, cwd=repo_root(),
                                        start_new_session=True)
        except OSError as e:
            self.store.write_status(run_id, state="failed", ended=_now(), error=f"cannot start the worker: {e}")
            self.store.log(run_id, f"cannot start the worker: {e}")
            return
        self._procs[run_id] = proc
        self.store.update_status(run_id, lambda s: {**s, "pid": proc.pid} if s["state"] == "running"
                                 and s.get("pid") is None else None)  # unless the worker already wrote it, or ended

    # ----- watching -------------------------------------------------------------------------
    def is_alive(self, run_id: str) -> bool:
        proc = self._procs.get(run_id)
        if proc is not None:
            return proc.poll() is None
        return pid_alive(self.store.read_status(run_id).get("pid"), run_id)

    def _fail_dead(self, run_id: str, code: Optional[int]) -> None:
        tail = self.store.log_tail(run_id)
        error = f"worker exited unexpectedly ({_exit_text(code)}); see log.txt" + (
            f"\n\nlast lines of log.txt:\n{tail}" if tail else "")
        if self._transition(run_id, "running", state="failed", ended=_now(), error=error):
            self.store.log(run_id, f"worker exited unexpectedly ({_exit_text(code)})")

    def poll(self) -> None:
        """Reap finished workers, fail runs whose worker died without saying so, launch queued runs
        (each claimed queued -> running by exactly one poller, under the runs folder's lock)."""
        with self._folder_locked():
            for run_id, proc in list(self._procs.items()):
                if proc.poll() is not None:
                    self._procs.pop(run_id, None)
                    self._fail_dead(run_id, proc.returncode)
            running, queued = 0, []
            for row in self.store.list_runs():
                if row["state"] == "running":
                    if row["id"] in self._procs or pid_alive(row.get("pid"), row["id"]):
                        running += 1
                    else:
                        self._fail_dead(row["id"], None)
                elif row["state"] == "queued":
                    queued.append(row["id"])
            for run_id in reversed(queued):  # list_runs is newest first
                if running >= self.max_running:
                    break
                if self._transition(run_id, "queued", state="running", pid=None, started=_now(), message="starting"):
                    self._launch(run_id)
                    running += 1

    def wait(self, run_id: str, timeout: float = 600.0, interval: float = 0.05) -> dict:
        """Poll until the run ends; returns its final status (RunError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            status = self.store.read_status(run_id)
            if status["state"] in FINAL_STATES:
                proc = self._procs.pop(run_id, None)
                if proc is not None:
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        self._procs[run_id] = proc
                return status
            if time.monotonic() > deadline:
                raise RunError(f"run {run_id} still {status['state']} after {timeout:.0f} s")
            time.sleep(interval)

    # ----- cancelling -----------------------------------------------------------------------
    def cancel(self, run_id: str, grace_s: float = 10.0) -> dict:
        """Cancel a queued run at once, or a running one: SIGTERM (the worker records the cancel and
        exits), then SIGKILL after grace_s. Finished runs are left as they are."""
        with self._folder_locked():  # a launch in progress records its worker's pid first
            if self._transition(run_id, "queued", state="cancelled", ended=_now(), message="cancelled"):
                self.store.log(run_id, "run cancelled while queued")
            status = self.store.read_status(run_id)
        if status["state"] == "running":
            pid = status.get("pid")
            proc = self._procs.get(run_id)
            if self.is_alive(run_id):
                self._signal(pid, signal.SIGTERM)
                if not self._wait_dead(run_id, proc, grace_s):
                    self._signal(pid, signal.SIGKILL)
                    self._wait_dead(run_id, proc, 5.0)
                    self.store.log(run_id, f"worker did not stop within {grace_s:.1f} s; killed")
            self._procs.pop(run_id, None)
            self._transition(run_id, "running", state="cancelled", ended=_now(), message="cancelled")
            if self.store.read_status(run_id)["state"] == "cancelled" and "run cancelled" not in \
                    self.store.log_tail(run_id, 3):
                self.store.log(run_id, "run cancelled")
        self.poll()
        return self.store.read_status(run_id)

    @staticmethod
    def _signal(pid, sig) -> None:
        try:
            os.killpg(int(pid), sig)  # the worker leads its own session: its children go too
        except (ProcessLookupError, PermissionError, OSError):
            try:
                os.kill(int(pid), sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _wait_dead(self, run_id: str, proc, timeout: float) -> bool:
        if proc is not None:
            try:
                proc.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_alive(run_id):
                return True
            time.sleep(0.05)
        return not self.is_alive(run_id)
