"""What `bench distill` finds already done in its --runs folder, so a rerun measures only what is
missing: the parent run whose experts a case can share, a finished case to read back, a case stopped
half way to resume, and a finished case of the same settings with fewer methods to extend.

A case is a child run (distill.m = M) that starts from its parent's data and experts. Extending a
finished case makes a new child with the new method list that starts from the finished one's data,
experts, distilled set, baseline sets and finished method rows: its evaluate stage then trains
students only for the methods the finished case lacks, on the finished case's own data and experts
(experts it lacks, e.g. the plain ones, are trained there from that data under the same settings),
with the same seeds and student protocol as the rows it keeps, so the rows still compare as one run.
Every reuse asks `has(run_dir)` first: the bench passes "its data is still the data the source gives".
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil

from ..config import RunConfig
from ..data.run_data import source_matches
from ..errors import MDWError
from ..evaluate.methods import expand_methods
from ..runs.manager import pid_alive
from ..runs.migrate import open_run
from ..runs.store import RunStore, append_jsonl, atomic_write_json, read_json

EXPERT_KEYS = ("seed", "data", "model", "experts")   # what a parent run's experts depend on
PARENT_PARTS = ("data_dir", "experts_dir", "scores_dir")          # what the experts stage and before wrote
CASE_PARTS = PARENT_PARTS + ("distill_dir", "eval_dir")           # ... and a finished case's own stages


def _link(a: str, b: str) -> None:
    """File b as a hard link to a where both are on one file system, else a copy. A linked file is
    only ever read: every writer in a run replaces a file (atomic rename), never rewrites it in place."""
    os.link(a, b) if os.stat(a).st_dev == os.stat(os.path.dirname(b)).st_dev else shutil.copy2(a, b)


def _link_tree(src: str, dst: str) -> None:
    """The folder src as dst, its files linked (the experts are large)."""
    shutil.copytree(src, dst, copy_function=_link)


def _without_methods(config: dict) -> dict:
    return {**config, "evaluate": {**config.get("evaluate", {}), "methods": None}}


def _same_config(store: RunStore, run_id: str, config: dict, keys=None, view=lambda d: d) -> bool:
    """The run's config equals `config` on `keys` (default: all but the cache folder), both seen
    through `view`. A key added to the config since the run was made reads as its default."""
    try:
        old = view(RunConfig.from_dict(store.read_config(run_id)).to_dict())
    except (OSError, ValueError, MDWError):       # a run of an unknown or older config: not this case
        return False
    config = view(config)
    return all(old.get(k) == config.get(k) for k in (keys or [k for k in config if k != "cache_dir"]))


def finished_run(store: RunStore, config: dict, keys=None, need=(), has=lambda run_dir: True) -> str:
    """The newest finished run in the store whose config equals `config` (on `keys`, or whole but for
    the cache folder), which holds the stages in `need` and passes `has`; "" if none. Lets a bench
    rerun with the same --runs folder skip what is already measured."""
    for r in store.list_runs():
        if (r.get("state") == "done" and set(need) <= set(r.get("stages_done") or [])
                and _same_config(store, r["id"], config, keys) and has(store.run_dir(r["id"]))):
            return r["id"]
    return ""


def interrupted_run(store: RunStore, config: dict, has=lambda run_dir: True) -> str:
    """The newest case with this whole config that stopped before its end (failed, cancelled, or
    'running' with its process gone) after its experts were linked in, and passes `has`; "" if
    none. The pipeline resumes it: finished stages and finished method rows are kept."""
    for r in store.list_runs():
        stopped = r.get("state") in ("failed", "cancelled") or (r.get("state") == "running" and not pid_alive(r.get("pid")))
        if (stopped and "experts" in (r.get("stages_done") or []) and _same_config(store, r["id"], config)
                and has(store.run_dir(r["id"]))):
            return r["id"]
    return ""


def extendable_run(store: RunStore, config: dict, has=lambda run_dir: True) -> str:
    """The finished case whose config equals `config` in everything but evaluate.methods (the
    experts, data, distillation, seeds and student protocol), which passes `has`, and which already
    has the most of the methods `config` lists (the newest of those on a tie); "" if none."""
    wanted = set(expand_methods(config["evaluate"]["methods"]))
    best, most = "", -1
    for r in store.list_runs():                                   # newest first
        if (r.get("state") == "done" and "evaluate" in (r.get("stages_done") or [])
                and _same_config(store, r["id"], config, view=_without_methods) and has(store.run_dir(r["id"]))):
            lay = open_run(store.run_dir(r["id"]))
            done = {row["method"] for row in read_json(lay.eval_results)["rows"]} if lay.eval_results.is_file() else set()
            if len(done & wanted) > most:
                best, most = r["id"], len(done & wanted)
    return best


def extend_run(store: RunStore, source: str, rc: RunConfig) -> str:
    """A new case with config `rc` that starts from the finished case `source` (upgraded to the
    current run format first): its data, experts, distilled set, baseline sets and students linked
    in, its distillation events copied, and its result rows of the methods `rc` still lists kept.
    Running the pipeline on it measures only the methods `source` lacks. Raises ValueError when
    `source` differs from `rc` in more than the method list; a failure while it is being built
    removes the half-built run."""
    if not _same_config(store, source, rc.to_dict(), view=_without_methods):
        raise ValueError(f"run {source}: its config differs from the case's in more than evaluate.methods")
    src = open_run(store.run_dir(source))
    run_id = store.create(rc.to_dict(), name=rc.name)
    with _removed_on_failure(store, run_id):
        dst = store.layout(run_id)
        for part in CASE_PARTS:
            if getattr(src, part).is_dir():
                _link_tree(os.fspath(getattr(src, part)), os.fspath(getattr(dst, part)))
        wanted = expand_methods(rc.evaluate.methods)
        table = read_json(src.eval_results)
        kept = [r for r in table["rows"] if r["method"] in wanted]
        have = {r["method"] for r in kept}
        dst.eval_results.unlink()                   # a linked file: the new table is this run's own
        atomic_write_json(dst.eval_results, {**table, "rows": kept}, indent=1)
        for event in store.read_events(source, stage="distill"):    # the distilled set's iteration times
            append_jsonl(dst.events, event)
        new = [m for m in wanted if m not in have]
        store.log(run_id, f"extends the finished case {source}: {len(kept)} method rows read back from it; "
                          f"measured here: {', '.join(new) or 'none'}")
        store.write_status(run_id, stages_done=["data", "experts", "heatmaps", "distill"], extends=source)
    return run_id


def measured_in(store: RunStore, run_id: str, keys: list) -> dict:
    """{(method, arch): the run whose evaluate stage measured that row of case `run_id`} for the row keys
    `keys`: the run itself, or, where it extends a finished case (its status's `extends`, see extend_run)
    that holds the row, the run that measured it there (followed back through every extension; each
    source's table read once). A source no longer in the store ends the search at the last run that is."""
    origin, open_keys = {k: run_id for k in keys}, set(keys)
    source = store.read_status(run_id).get("extends")
    while open_keys and source and store.exists(source):
        rows = read_json(open_run(store.run_dir(source)).eval_results)["rows"]
        open_keys &= {(r["method"], r.get("arch")) for r in rows}
        origin.update(dict.fromkeys(open_keys, source))
        source = store.read_status(source).get("extends")
    return origin


@contextlib.contextmanager
def _removed_on_failure(store: RunStore, run_id: str):
    """Remove the run folder if the block raises (a half-built case is never left to be taken for a
    queued run); the error goes on."""
    try:
        yield
    except BaseException:
        shutil.rmtree(store.run_dir(run_id), ignore_errors=True)
        raise


def shares_experts(run_dir: str, rc: RunConfig, plain: bool) -> bool:
    """A finished run whose experts a case can use: the plain ones there if needed, and its data
    still the data the source gives now (the same files, at the same place)."""
    lay = open_run(run_dir)
    if plain and not lay.experts("plain").exists():
        return False
    return source_matches(lay, rc.data, rc.resolved_cache_dir())


def child_config(rc: RunConfig, m: int) -> RunConfig:
    return dataclasses.replace(rc, name=f"{rc.name}-M{m}", distill=dataclasses.replace(rc.distill, m=m))


def child_run(store: RunStore, parent: str, rc: RunConfig, m: int) -> str:
    """A run with distill.m = m that starts from the parent's data and experts."""
    rc = child_config(rc, m)
    run_id = store.create(rc.to_dict(), name=rc.name)
    with _removed_on_failure(store, run_id):
        src, dst = store.layout(parent), store.layout(run_id)
        for part in PARENT_PARTS:
            _link_tree(os.fspath(getattr(src, part)), os.fspath(getattr(dst, part)))
        store.write_status(run_id, stages_done=["data", "experts", "heatmaps"])
    return run_id
