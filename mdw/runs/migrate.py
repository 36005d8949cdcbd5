"""The one migration point: `open_run(run_dir)` upgrades a run written by an older version in place,
once, and returns its RunLayout. Readers then rely on the current format (no fallbacks for keys or
arrays an older run lacked).

    lay = open_run(store.run_dir(run_id))      # every process that opens a run calls this first

The upgrade runs under `.migrate.lock` in the run folder (the app and a worker never migrate
together), as the steps in STEPS, in order. Each step is idempotent (it checks what it would change
and does nothing when it is already done) and atomic per file (store.atomic_write_json /
atomic_save). format.json ({"format": FORMAT_VERSION}) is written last, so a migration killed
half-way is redone, step by step, on the next open. A folder that is not a run yet (no status.json,
no config.json) is returned untouched.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from ..errors import ConfigError
from .layout import EXPERT_KINDS, FORMAT_VERSION, RunLayout
from .store import atomic_save, atomic_write_json, file_lock, read_json

_opened: set = set()            # run folders opened (and upgraded) by this process
_opened_guard = threading.Lock()


# ----- steps (each: RunLayout -> None, idempotent, atomic per file) -------------------------------

def upgrade_config(lay: RunLayout) -> None:
    """config.json: distill.learn_p (bool) becomes distill.labels ("soft" | "identity"); every
    section and key the run's version lacked is filled with today's default (RunConfig's own
    to_dict), so readers parse it as it is. A config that does not validate is left as renamed: the
    stage or view that parses it raises the ConfigError naming the key."""
    if not lay.config.is_file():
        return
    old = read_json(lay.config)
    if not isinstance(old, dict):
        return
    d = dict(old)
    dist = d.get("distill")
    if isinstance(dist, dict) and "learn_p" in dist:
        dist = dict(dist)
        learn = dist.pop("learn_p")
        dist.setdefault("labels", "soft" if learn else "identity")
        d["distill"] = dist
    from ..config import RunConfig   # the config module is heavier; only a migrating process needs it
    try:
        d = RunConfig.from_dict(d).to_dict()
    except ConfigError:
        pass
    if d != old:
        atomic_write_json(lay.config, d, indent=2)


def upgrade_scores(lay: RunLayout) -> None:
    """dtcl/scores*.npz written before the two tracks were kept: wA and wB (epochs, pairs) float
    become copies of consensus, flag (epochs, pairs) bool becomes consensus < 0.5 (what the app
    showed for such runs)."""
    for kind in EXPERT_KINDS:
        path = lay.scores(kind)
        if not path.is_file():
            continue
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        if "consensus" not in arrays or all(k in arrays for k in ("wA", "wB", "flag")):
            continue
        c = arrays["consensus"]
        arrays.setdefault("wA", c.copy())
        arrays.setdefault("wB", c.copy())
        arrays.setdefault("flag", c < 0.5)
        atomic_save(path, lambda tmp, a=arrays: np.savez_compressed(tmp, **a))


def upgrade_expert_meta(lay: RunLayout) -> None:
    """experts/<kind>/meta.json without "gmm" (runs before the loss mixtures were recorded): {}."""
    for kind in EXPERT_KINDS:
        path = lay.experts(kind).meta
        if path.is_file():
            meta = read_json(path)
            if "gmm" not in meta:
                atomic_write_json(path, {**meta, "gmm": {}})


def upgrade_status(lay: RunLayout) -> None:
    """status.json without "stage_seconds" (runs before stage timing): {}. Under the status lock, as
    every status write is (a worker may be writing it)."""
    if not lay.status.is_file():
        return
    with file_lock(lay.status_lock):
        status = read_json(lay.status)
        if "stage_seconds" not in status or status["stage_seconds"] is None:
            atomic_write_json(lay.status, {**status, "stage_seconds": {}}, indent=2)


def upgrade_distilled_sets(lay: RunLayout) -> None:
    """Distilled sets saved before `labels` and `meta` were stored (distill/distilled.pt, its
    snapshots, the baselines' eval/sets/*.pt): "soft" labels (the only kind then) and {}."""
    import torch
    paths = [lay.distilled] + sorted(lay.snapshots_dir.glob("*.pt")) + sorted(lay.eval_sets_dir.glob("*.pt"))
    for path in paths:
        if not path.is_file():
            continue
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "labels" in state and "meta" in state:
            continue
        state = {"meta": {}, "labels": "soft", **state}
        atomic_save(path, lambda tmp, s=state: torch.save(s, tmp))


def upgrade_heatmaps(lay: RunLayout) -> None:
    """heatmaps/maps.npz written before the text-context counts: words_encoded / words_total -1
    (unknown) for every item; its generation stamp kept."""
    path = lay.heatmap_maps
    if not path.is_file():
        return
    with file_lock(lay.heatmap_lock):
        with np.load(path, allow_pickle=False) as z:
            if "words_encoded" in z.files and "words_total" in z.files:
                return
            arrays = {k: z[k] for k in z.files}
        for k in ("words_encoded", "words_total"):
            arrays.setdefault(k, np.full(len(arrays["item_id"]), -1, dtype=np.int32))
        atomic_save(path, lambda tmp: np.savez_compressed(tmp, **arrays))


def upgrade_data(lay: RunLayout) -> None:
    """Format 1 kept every pair in data/pairs.json and re-read the source on every stage: write the
    run's own data (data/images.npy, data/table/) from the source once (mdw/data/run_data.py).
    DataError naming the source when it is gone or changed (the run then stays at format 1)."""
    from ..data.run_data import upgrade_format1_data
    upgrade_format1_data(lay)


# In order; upgrade_data after upgrade_config (it reads the upgraded config's data section).
STEPS = (upgrade_config, upgrade_data, upgrade_scores, upgrade_expert_meta, upgrade_status, upgrade_distilled_sets,
         upgrade_heatmaps)


# ----- the entry point ----------------------------------------------------------------------------

def is_run(lay: RunLayout) -> bool:
    return lay.status.is_file() or lay.config.is_file()


def migrate(lay: RunLayout) -> bool:
    """Upgrade the run when its format is older than FORMAT_VERSION; True when it did. Holds
    `.migrate.lock` (RunError after 120 s of another process holding it)."""
    if not is_run(lay) or lay.format_version() >= FORMAT_VERSION:
        return False
    with file_lock(lay.migrate_lock):
        if lay.format_version() >= FORMAT_VERSION:   # another process finished it while we waited
            return False
        for step in STEPS:
            step(lay)
        atomic_write_json(lay.format, {"format": FORMAT_VERSION})
    return True


def open_run(run_dir) -> RunLayout:
    """The run's RunLayout, the run upgraded to FORMAT_VERSION first (once per process per folder;
    later calls only build the layout). run_dir: str or Path. Errors: RunError when another process
    holds the migration lock too long, or a file of the run is not valid JSON."""
    lay = RunLayout(run_dir)
    key = os.fspath(lay.root)
    if key in _opened:
        return lay
    with _opened_guard:
        if key not in _opened:
            migrate(lay)
            if is_run(lay):          # a folder that becomes a run later is checked again then
                _opened.add(key)
    return lay
