"""The run folder: run ids, the store, and real worker processes (done, cancelled, crashed,
killed, queued, and seen by a second manager). Atomic files: test_atomic_files.py."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mdw.errors import RunError
from mdw.runs.context import run_in_context
from mdw.runs.manager import RunManager
from mdw.runs.store import RunStore

WORKER = """\
import os, signal, sys, time
from mdw.runs.store import RunStore
from mdw.runs.context import run_in_context

run_id, root = sys.argv[1], sys.argv[2]


def wait_for_go(ctx):
    while not os.path.exists(ctx.path("go")):
        time.sleep(0.02)


def body(ctx):
{body}

sys.exit(run_in_context(RunStore(root), run_id, body))
"""

BODIES = {
    "quick": """
        with ctx.stage("prepare"):
            for i in range(3):
                ctx.event(i, loss=1.0 / (i + 1))
                ctx.progress((i + 1) / 3, f"step {i}")
            with open(ctx.path("out.txt"), "w") as f:
                f.write("ok")
        with ctx.stage("train"):
            ctx.log("training")
    """,
    "gated": """
        with ctx.stage("prepare"):
            wait_for_go(ctx)
        with ctx.stage("train"):
            ctx.event(0, loss=0.5)
    """,
    "loop": """
        with ctx.stage("loop"):
            i = 0
            while True:
                ctx.progress(min(i / 1000, 0.99), f"step {i}")
                time.sleep(0.02)
                i += 1
    """,
    "stubborn": """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with ctx.stage("loop"):
            while True:
                time.sleep(0.02)
    """,
    "boom": """
        with ctx.stage("prepare"):
            pass
        with ctx.stage("train"):
            for step in range(5):
                if step == 3:
                    raise ValueError(f"boom at step {step}")
    """,
    "exit3": """
        with ctx.stage("train"):
            print("about to die", flush=True)
            os._exit(3)
    """,
    "sigkill": """
        with ctx.stage("train"):
            os.kill(os.getpid(), signal.SIGKILL)
    """,
}


@pytest.fixture
def runs(tmp_path):
    """A runs folder and a factory of managers whose workers run the script `config["body"]`."""
    root = tmp_path / "runs"
    scripts = tmp_path / "workers"
    scripts.mkdir()
    for name, body in BODIES.items():
        code = WORKER.format(body=textwrap.indent(textwrap.dedent(body).strip("\n"), "    "))
        (scripts / f"{name}.py").write_text(code)
    managers = []

    def make(max_running=1):
        store = RunStore(root)

        def argv(run_id):
            body = store.read_config(run_id)["body"]
            return [sys.executable, str(scripts / f"{body}.py"), run_id, str(root)]

        m = RunManager(root, max_running=max_running, worker_argv=argv)
        managers.append(m)
        return m

    yield make
    for m in managers:  # never leave workers behind
        for row in m.store.list_runs():
            if row["state"] in ("running", "queued"):
                m.cancel(row["id"], grace_s=0.5)


def wait_state(store, run_id, states, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = store.read_status(run_id)
        if s["state"] in states:
            return s
        time.sleep(0.02)
    raise AssertionError(f"{run_id} still {store.read_status(run_id)['state']}, wanted {states}")


# ----- store --------------------------------------------------------------------------------

def test_run_id_validation(tmp_path):
    store = RunStore(tmp_path / "runs")
    for bad in ["../x", "a/b", "/etc", "..", "", "a..b", ".hidden", "-x", "x" * 81, "a b", None]:
        with pytest.raises(RunError):
            store.validate_run_id(bad)
        assert not store.exists(bad)
    for good in ["20240101-120000-run-ab12", "my_run.1", "x" * 80]:
        assert store.validate_run_id(good) == good
    (tmp_path / "runs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "runs" / "evil")
    with pytest.raises(RunError, match="evil"):
        store.run_dir("evil")


def test_store_create_status_events_list(tmp_path):
    store = RunStore(tmp_path / "runs")
    a = store.create({"name": "First run", "seed": 1}, name="First run!")
    assert a.split("-")[2:4] == ["first", "run"] and store.exists(a)
    assert store.read_config(a) == {"name": "First run", "seed": 1}
    s = store.read_status(a)
    assert s["state"] == "queued" and s["stages_done"] == [] and s["error"] is None
    store.write_status(a, stage="dtcl", progress=0.5)
    store.write_status(a, message="half way")
    s = store.read_status(a)
    assert (s["stage"], s["progress"], s["message"], s["state"]) == ("dtcl", 0.5, "half way", "queued")
    with pytest.raises(RunError):
        store.write_status(a, state="exploded")
    store.append_event(a, "dtcl", 0, loss=1.5)
    store.append_event(a, "distill", 0, loss=0.5)
    assert [e["stage"] for e in store.read_events(a)] == ["dtcl", "distill"]
    assert store.read_events(a, stage="dtcl")[0]["loss"] == 1.5
    assert isinstance(store.read_events(a)[0]["time"], float)

    time.sleep(1.05)  # ids and creation times are to the second
    b = store.create({}, name="second")
    os.makedirs(os.path.join(store.root, "junk"))  # no status.json
    os.makedirs(os.path.join(store.root, "broken"))
    with open(os.path.join(store.root, "broken", "status.json"), "w") as f:
        f.write('{"state": "runn')
    rows = store.list_runs()
    assert [r["id"] for r in rows] == [b, a]
    assert rows[1]["name"] == "First run!" and rows[1]["stage"] == "dtcl"
    with pytest.raises(RunError, match="nope"):
        store.read_status("nope")


def test_run_in_context_in_process(tmp_path):
    store = RunStore(tmp_path / "runs")
    rid = store.create({}, name="inproc")
    handler = signal.getsignal(signal.SIGTERM)

    def body(ctx):
        assert not ctx.stage_done("a")
        with ctx.stage("a"):
            ctx.event(1, x=2)
        assert ctx.stage_done("a")
        with pytest.raises(RunError):
            ctx.path("..", "other")
        raise KeyboardInterrupt

    assert run_in_context(store, rid, body) == 130
    s = store.read_status(rid)
    assert s["state"] == "cancelled" and s["stages_done"] == ["a"] and s["ended"]
    assert store.read_events(rid) == [dict(store.read_events(rid)[0], stage="a", step=1, x=2)]

    def resume(ctx):  # a resumed run skips what it finished
        with ctx.stage("b"):
            assert ctx.stage_done("a")

    assert run_in_context(store, rid, resume) == 0
    s = store.read_status(rid)
    assert s["state"] == "done" and s["stages_done"] == ["a", "b"] and s["pid"] == os.getpid()
    assert signal.getsignal(signal.SIGTERM) is handler  # restored


# ----- manager with real workers ------------------------------------------------------------

def test_lifecycle_running_then_done(runs):
    m = runs()
    rid = m.create_and_start({"body": "gated"}, name="life")
    s = wait_state(m.store, rid, ["running"])
    assert s["pid"] and m.is_alive(rid) and s["started"]
    m.poll()
    assert m.store.read_status(rid)["state"] == "running"
    open(os.path.join(m.store.run_dir(rid), "go"), "w").close()
    s = m.wait(rid, timeout=10)
    assert s["state"] == "done" and s["stages_done"] == ["prepare", "train"]
    assert s["ended"] and s["error"] is None and s["progress"] == 1.0
    assert m.store.read_events(rid, stage="train")[0]["loss"] == 0.5
    assert "stage train: done" in open(os.path.join(m.store.run_dir(rid), "log.txt")).read()

    rid2 = m.create_and_start({"body": "quick"}, name="quick")
    s = m.wait(rid2, timeout=10)
    assert s["state"] == "done" and len(m.store.read_events(rid2, stage="prepare")) == 3
    assert open(os.path.join(m.store.run_dir(rid2), "out.txt")).read() == "ok"
    assert not m._procs  # children reaped


def test_cancel_running_and_queued(runs):
    m = runs()
    a = m.create_and_start({"body": "loop"}, name="loop")
    b = m.create_and_start({"body": "quick"}, name="waits")
    wait_state(m.store, a, ["running"])
    assert m.store.read_status(b)["state"] == "queued" and not m.store.read_status(b)["pid"]
    s = m.cancel(b)
    assert s["state"] == "cancelled" and s["ended"]
    t0 = time.monotonic()
    s = m.cancel(a, grace_s=5)
    assert time.monotonic() - t0 < 3  # the worker stopped itself on SIGTERM
    assert s["state"] == "cancelled" and not m.is_alive(a)
    assert "run cancelled" in open(os.path.join(m.store.run_dir(a), "log.txt")).read()
    m.poll()
    assert m.store.read_status(b)["state"] == "cancelled"  # a cancelled run is not launched


def test_cancel_stubborn_worker_is_killed(runs):
    m = runs()
    rid = m.create_and_start({"body": "stubborn"}, name="stubborn")
    wait_state(m.store, rid, ["running"])
    time.sleep(0.2)  # let it install SIG_IGN
    s = m.cancel(rid, grace_s=0.5)
    assert s["state"] == "cancelled" and not m.is_alive(rid)


def test_crash_is_failed_with_error(runs):
    m = runs()
    rid = m.create_and_start({"body": "boom"}, name="boom")
    s = m.wait(rid, timeout=10)
    assert s["state"] == "failed" and "boom at step 3" in s["error"]
    assert "ValueError" in s["error"] and "Traceback" in s["error"]
    assert s["stages_done"] == ["prepare"] and s["stage"] == "train" and s["ended"]
    assert "boom at step 3" in open(os.path.join(m.store.run_dir(rid), "log.txt")).read()


@pytest.mark.parametrize("body,code", [("exit3", "exit code 3"), ("sigkill", "SIGKILL")])
def test_killed_worker_is_failed_by_poll(runs, body, code):
    m = runs()
    rid = m.create_and_start({"body": body}, name=body)
    s = m.wait(rid, timeout=10)
    assert s["state"] == "failed" and "worker exited unexpectedly" in s["error"]
    assert code in s["error"] and "see log.txt" in s["error"]
    if body == "exit3":
        assert "about to die" in s["error"]  # the log tail


def test_queue_with_max_running_1(runs):
    m = runs(max_running=1)
    a = m.create_and_start({"body": "gated"}, name="first")
    b = m.create_and_start({"body": "quick"}, name="second")
    wait_state(m.store, a, ["running"])
    for _ in range(3):
        m.poll()
        assert m.store.read_status(b)["state"] == "queued"
        time.sleep(0.05)
    open(os.path.join(m.store.run_dir(a), "go"), "w").close()
    assert m.wait(a, timeout=10)["state"] == "done"
    assert m.wait(b, timeout=10)["state"] == "done"
    with pytest.raises(RunError):
        m.start("../etc")


def test_new_manager_sees_running_run(runs):
    m1 = runs()
    rid = m1.create_and_start({"body": "loop"}, name="long")
    wait_state(m1.store, rid, ["running"])
    m2 = runs()  # a reloaded app: knows nothing but the runs folder
    m2.poll()
    assert m2.store.read_status(rid)["state"] == "running" and m2.is_alive(rid)
    with pytest.raises(RunError, match="already running"):
        m2.start(rid)
    queued = m2.create_and_start({"body": "quick"}, name="after")
    assert m2.store.read_status(queued)["state"] == "queued"  # the slot is taken by m1's run
    assert m2.cancel(rid, grace_s=5)["state"] == "cancelled"
    assert m2.wait(queued, timeout=10)["state"] == "done"
    m1.poll()
    assert m1.store.read_status(rid)["state"] == "cancelled"


def test_stale_running_status_is_failed(runs, tmp_path):
    m = runs()
    rid = m.store.create({"body": "quick"}, name="stale")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    m.store.write_status(rid, state="running", pid=dead.pid)  # a worker of an app that is gone
    m.poll()
    s = m.store.read_status(rid)
    assert s["state"] == "failed" and "exit code unknown" in s["error"]
    m.start(rid)  # a failed run can be started again (resumed)
    assert m.wait(rid, timeout=10)["state"] == "done"


def test_worker_that_cannot_start_is_failed(tmp_path):
    m = RunManager(tmp_path / "runs", worker_argv=lambda rid: [str(tmp_path / "no-such-python")])
    assert m.default_argv("r1") == [sys.executable, "-m", "mdw", "run", "--resume", "r1", "--runs",
                                    str(tmp_path / "runs")]
    rid = m.create_and_start({}, name="nostart")
    s = m.store.read_status(rid)
    assert s["state"] == "failed" and "cannot start the worker" in s["error"]
