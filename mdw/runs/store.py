"""The run folder store. Every write is atomic (a temp file beside the target, then a rename), so a
reader never sees half a file and a killed writer leaves the last complete version.

A run's files are named by `RunLayout` (layout.py): config.json (the full RunConfig as a dict),
status.json (state, stage, progress, message, pid, times, stages_done, error, stage_seconds: wall
seconds of each finished stage), events.jsonl (one JSON object a line: time, stage, step, metrics),
log.txt (human-readable; the worker's output goes here too) and format.json (written at creation).
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import re
import secrets
import time
from contextlib import contextmanager
from typing import Callable, Optional

from filelock import FileLock, Timeout

from ..errors import RunError
from .layout import FORMAT_VERSION, RunLayout

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
_RUN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")


# ----- locks --------------------------------------------------------------------------------

@contextmanager
def file_lock(path, timeout: float = 120.0):
    """Hold an exclusive inter-process lock (flock, via `filelock`) on the file `path` for the body
    of a `with`; the file (and its folder) is made when missing and kept afterwards. One lock object
    per call, so two threads of one process exclude each other too; not re-entrant (taking the same
    lock again inside the body waits for ever). RunError naming the file after `timeout` seconds."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    lock = FileLock(path, timeout=timeout, preserve_lock_file=True)
    try:
        lock.acquire()
    except Timeout:
        raise RunError(f"{path}: still locked by another process after {timeout:.0f} s") from None
    try:
        yield path
    finally:
        lock.release()


# ----- atomic files -------------------------------------------------------------------------

def atomic_save(path, write: Callable[[str], None]) -> str:
    """Call write(tmp) on a temp path in the target's folder (same extension, so numpy keeps the
    name), then rename it over `path`. On any error the temp file is removed and `path` untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1]
    tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}{ext}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> str:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    return atomic_save(path, write)


def atomic_write_text(path, text: str) -> str:
    return atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(obj, indent: Optional[int] = None) -> str:
    """JSON text any strict parser reads: a float that is NaN or ±inf becomes null (JSON has no
    token for them; Python would write bare NaN / Infinity). Raises ValueError for what JSON cannot
    hold at all."""
    return json.dumps(_finite(obj), indent=indent, ensure_ascii=False, allow_nan=False)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_json(path, obj, indent: Optional[int] = None) -> str:
    """Write obj as strict JSON (non-finite floats as null, as strict_json does), atomically.
    The object is written as it is; only when it holds a non-finite float is it written again
    sanitized (so the common, finite case streams without a copy)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            try:
                json.dump(obj, f, indent=indent, ensure_ascii=False, allow_nan=False)
            except ValueError as e:
                if "Out of range float" not in str(e):
                    raise
                f.seek(0)
                f.truncate()
                json.dump(_finite(obj), f, indent=indent, ensure_ascii=False, allow_nan=False)
    return atomic_save(path, write)


def read_json(path):
    """A JSON file; a clear RunError naming the file when it is not valid JSON."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None


def append_jsonl(path, obj) -> None:
    """Append one JSON line. A partial last line (a writer killed mid-line) is cut off first."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    line = (strict_json(obj) + "\n").encode("utf-8")
    with open(path, "ab+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    f.seek(0)
                    f.truncate(f.read().rfind(b"\n") + 1)
                    f.seek(0, os.SEEK_END)
            f.write(line)
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_jsonl(path) -> list:
    """All complete lines of a JSON-lines file ([] when missing). A last line without its newline
    is a write in progress (or killed) and is ignored; a bad complete line is an error."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    lines = lines[:-1]  # the piece after the last newline is empty or incomplete
    out = []
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            out.append(json.loads(raw))
        except json.JSONDecodeError as e:
            raise RunError(f"{path}: line {i} is not valid JSON ({e})") from None
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def slug(name: str, width: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", (name or "").lower()).strip("-")
    return s[:width].strip("-") or "run"


# ----- the store ----------------------------------------------------------------------------

class RunStore:
    """All runs under one folder; every method validates the run id it is given."""

    def __init__(self, root):
        self.root = os.path.abspath(os.fspath(root))

    # ids and paths
    def validate_run_id(self, run_id) -> str:
        if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or ".." in run_id:
            raise RunError(f"invalid run id {run_id!r}: use letters, digits, '_', '-', '.' "
                           "(at most 80, not starting with '.' or '-')")
        return run_id

    def run_dir(self, run_id) -> str:
        d = os.path.join(self.root, self.validate_run_id(run_id))
        if os.path.islink(d) or os.path.dirname(os.path.realpath(d)) != os.path.realpath(self.root):
            raise RunError(f"run {run_id!r}: its folder is a link out of {self.root}")
        return d

    def layout(self, run_id) -> RunLayout:
        """The run's RunLayout (its id validated; the run need not exist yet)."""
        return RunLayout(self.run_dir(run_id))

    def path(self, run_id, *parts) -> str:
        base = self.run_dir(run_id)
        p = os.path.normpath(os.path.join(base, *parts))
        if not p.startswith(base + os.sep):
            raise RunError(f"run {run_id}: path {os.path.join(*parts)!r} leaves the run folder")
        return p

    def exists(self, run_id) -> bool:
        try:
            return self.layout(run_id).status.is_file()
        except RunError:
            return False

    def _need(self, run_id) -> RunLayout:
        lay = self.layout(run_id)
        if not lay.status.is_file():
            raise RunError(f"no run {run_id!r} in {self.root}")
        return lay

    # creation
    def create(self, config: dict, name: Optional[str] = None) -> str:
        """A new run folder with config.json, format.json ({"format": FORMAT_VERSION}: a new run
        needs no migration) and a queued status (written last: it is what makes a folder a run);
        returns its id."""
        os.makedirs(self.root, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for _ in range(100):
            run_id = f"{stamp}-{slug(name or config.get('name', 'run'))}-{secrets.token_hex(2)}"
            try:
                os.mkdir(os.path.join(self.root, run_id))
                break
            except FileExistsError:
                continue
        else:
            raise RunError(f"cannot create a run folder in {self.root}")
        lay = self.layout(run_id)
        atomic_write_json(lay.config, config, indent=2)
        atomic_write_json(lay.format, {"format": FORMAT_VERSION})
        atomic_write_json(lay.status, {
            "id": run_id, "name": name or config.get("name") or run_id, "state": "queued", "stage": None,
            "progress": 0.0, "message": "", "pid": None, "created": _now(), "created_ts": time.time(),
            "started": None, "ended": None, "stages_done": [], "error": None}, indent=2)
        return run_id

    # config and status
    def read_config(self, run_id) -> dict:
        return read_json(self._need(run_id).config)

    def read_status(self, run_id) -> dict:
        return read_json(self._need(run_id).status)

    @contextmanager
    def _locked(self, run_id):
        lay = self._need(run_id)
        with file_lock(lay.status_lock):
            yield lay

    def update_status(self, run_id, fn: Callable[[dict], Optional[dict]]) -> dict:
        """Read-modify-write status.json under a lock (worker and managers both write it)."""
        with self._locked(run_id) as lay:
            p = lay.status
            status = read_json(p)
            new = fn(dict(status))
            if new is not None and new != status:
                if new.get("state") not in STATES:
                    raise RunError(f"run {run_id}: unknown state {new.get('state')!r} (one of {STATES})")
                atomic_write_json(p, new, indent=2)
                status = new
            return status

    def write_status(self, run_id, **fields) -> dict:
        if "state" in fields and fields["state"] not in STATES:
            raise RunError(f"run {run_id}: unknown state {fields['state']!r} (one of {', '.join(STATES)})")
        return self.update_status(run_id, lambda s: {**s, **fields})

    # events and log
    def append_event(self, run_id, stage: str, step: int, **metrics) -> None:
        append_jsonl(self._need(run_id).events,
                     {"time": time.time(), "stage": stage, "step": step, **metrics})

    def read_events(self, run_id, stage: Optional[str] = None) -> list:
        events = read_jsonl(self._need(run_id).events)
        return [e for e in events if stage is None or e.get("stage") == stage]

    def log(self, run_id, text: str) -> None:
        with open(self._need(run_id).log, "a", encoding="utf-8") as f:
            f.write(f"[{_now()}] {text}\n")

    def log_tail(self, run_id, lines: int = 15) -> str:
        p = self._need(run_id).log
        if not os.path.exists(p):
            return ""
        with open(p, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
            text = f.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    # listing
    def list_runs(self) -> list:
        """Status rows of every readable run, newest first; folders that are not runs are skipped."""
        if not os.path.isdir(self.root):
            return []
        rows = []
        for name in os.listdir(self.root):
            try:
                status = self.read_status(name)
            except (RunError, OSError):
                continue
            rows.append({**status, "id": name})
        rows.sort(key=lambda r: (r.get("created_ts") or 0, r["id"]), reverse=True)
        return rows
