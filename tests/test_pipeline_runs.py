"""The real worker (`python -m mdw run --resume`) started, watched and cancelled by the RunManager."""
import json
import time


from mdw.config import RunConfig, apply_overrides
from mdw.pipeline import stage_names
from mdw.runs.manager import RunManager

from helpers import TINY_RUN as TINY


def config(*extra) -> dict:
    return apply_overrides(RunConfig(), TINY + list(extra)).to_dict()


def wait_for(pred, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def test_start_runs_to_done_with_stages_and_log(tmp_path, cache_dir):
    mgr = RunManager(str(tmp_path / "runs"))
    run_id = mgr.create_and_start(config(), name="tiny")
    st = mgr.wait(run_id, timeout=180)
    assert st["state"] == "done", st
    assert st["stages_done"] == stage_names() and st["progress"] == 1
    run_dir = mgr.store.run_dir(run_id)
    summary = json.loads((tmp_path / "runs" / run_id / "data" / "summary.json").read_text())
    assert summary["noise"]["count"] == int(0.2 * summary["splits"]["train"]["pairs"])
    assert "stage experts: done" in open(f"{run_dir}/log.txt").read()


def test_cancel_a_real_run(tmp_path, cache_dir):
    mgr = RunManager(str(tmp_path / "runs"))
    run_id = mgr.create_and_start(config("experts.epochs=200"), name="long")
    wait_for(lambda: mgr.store.read_status(run_id).get("stage") == "experts", timeout=120)
    st = mgr.cancel(run_id, grace_s=20)
    assert st["state"] == "cancelled" and not mgr.is_alive(run_id)


def test_a_crash_is_failed_with_its_error(tmp_path, cache_dir):
    csv = tmp_path / "pairs.csv"
    csv.write_text("image,caption\n")
    mgr = RunManager(str(tmp_path / "runs"))
    run_id = mgr.create_and_start(config("data.source=csv", f"data.path={csv}"), name="bad")
    st = mgr.wait(run_id, timeout=120)
    assert st["state"] == "failed"
    assert "pairs.csv" in st["error"]
