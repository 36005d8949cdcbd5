"""Atomic files of the run folder: a write is whole or absent (also when its writer is killed),
JSON lines with a partial last line, non-finite numbers written as null."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mdw.errors import RunError
from mdw.runs.manager import repo_root
from mdw.runs.store import append_jsonl, atomic_save, atomic_write_json, atomic_write_text, read_jsonl

def test_atomic_writes(tmp_path):
    p = tmp_path / "a" / "b" / "x.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"

    def write_npy(tmp):
        assert tmp.endswith(".npy") and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as f:
            f.write(b"data")
    atomic_save(tmp_path / "arr.npy", write_npy)
    assert (tmp_path / "arr.npy").read_bytes() == b"data"

    def failing(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError):
        atomic_save(tmp_path / "arr.npy", failing)
    assert (tmp_path / "arr.npy").read_bytes() == b"data"
    assert sorted(os.listdir(tmp_path)) == ["a", "arr.npy", "t.txt"]  # no temp files left


def test_killed_writer_leaves_a_complete_file(tmp_path):
    target = tmp_path / "big.json"
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent("""\
        import sys
        from mdw.runs.store import atomic_write_json
        i = 0
        while True:
            atomic_write_json(sys.argv[1], {"v": i, "data": [i] * 100000})
            i += 1
    """))
    env = dict(os.environ, PYTHONPATH=repo_root())
    rng = random.Random(0)
    killed_mid_write = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, str(script), str(target)], env=env)
        deadline = time.monotonic() + 10
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        obj = json.loads(target.read_text())
        assert obj["data"] == [obj["v"]] * 100000
        others = [n for n in os.listdir(tmp_path) if n not in ("big.json", "writer.py")]
        assert all(n.startswith("big.json.tmp-") for n in others)
        killed_mid_write += len(others)
        for n in others:
            os.remove(tmp_path / n)
    # Kill it once more while a temp file is open (seen on disk), so a kill mid-write is certain
    # to be covered whatever the machine's timing: the complete file must stay, the temp be partial.
    for _ in range(50):
        proc = subprocess.Popen([sys.executable, str(script), str(target)], env=env)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                n.startswith("big.json.tmp-") for n in os.listdir(tmp_path)):
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        obj = json.loads(target.read_text())
        assert obj["data"] == [obj["v"]] * 100000
        others = [n for n in os.listdir(tmp_path) if n.startswith("big.json.tmp-")]
        killed_mid_write += len(others)
        for n in others:
            os.remove(tmp_path / n)
        if killed_mid_write:
            break
    assert killed_mid_write > 0


def test_jsonl_partial_last_line_ignored(tmp_path):
    p = tmp_path / "events.jsonl"
    append_jsonl(p, {"step": 0})
    append_jsonl(p, {"step": 1})
    with open(p, "ab") as f:
        f.write(b'{"step": 2, "lo')  # the writer was killed mid-line
    assert read_jsonl(p) == [{"step": 0}, {"step": 1}]
    append_jsonl(p, {"step": 3})  # a resumed writer: the partial line stays one bad line
    assert read_jsonl(p) == [{"step": 0}, {"step": 1}, {"step": 3}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": nope}\n{"a": 2}\n')
    with pytest.raises(RunError, match="line 2"):
        read_jsonl(bad)


def test_atomic_json_writes_non_finite_as_null_and_finite_as_is(tmp_path):
    def reject(token):
        raise ValueError(f"non-standard JSON token {token}")
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": [1.5, float("nan")], "b": {"c": (float("-inf"), 2)}, "d": "x"})
    assert json.loads(p.read_text(), parse_constant=reject) == {
        "a": [1.5, None], "b": {"c": [None, 2]}, "d": "x"}
    atomic_write_json(p, {"a": [1.5, 2.0]}, indent=1)  # the fast path leaves no trace of the last
    assert json.loads(p.read_text()) == {"a": [1.5, 2.0]}
    assert sorted(os.listdir(tmp_path)) == ["r.json"]
    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": object()})
    assert json.loads(p.read_text()) == {"a": [1.5, 2.0]}
