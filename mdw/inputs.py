"""The one way a stage gets its run's inputs: the run's own data (data/images.npy + data/table,
never the source), the training pairs with their frozen text features, and a clean evaluation
split, built once per process and shared by every stage that runs in it.

    inp = run_inputs(run_dir, cfg)                 # RunInputs(data, pairs, eval, eval_split)
    inp.data.pairs.captions, inp.pairs.batch(idx, device), inp.eval.images
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Callable, Optional

from .config import RunConfig
from .data.prepare import Prepared
from .data.run_data import open_run_data
from .runs.layout import RunLayout
from .train.data import PairTensors, RetrievalSplit, build_tensors

_CACHE: dict = {}


@dataclass
class RunInputs:
    data: Prepared          # the run's PairSet (noise applied), its memory-mapped images, the noise record
    pairs: PairTensors      # the training pairs (noisy where the run injected noise)
    eval: RetrievalSplit    # the clean `eval_split` split (test by default; dev for settings)
    eval_split: str


def _layout(run) -> RunLayout:
    return run if isinstance(run, RunLayout) else RunLayout(getattr(run, "run_dir", run))


def run_data(run) -> Prepared:
    """The run's data as its data stage wrote it (`run`: a run folder, RunLayout or RunContext).
    Raises DataError when the data stage has not finished."""
    lay = _layout(run)
    key = ("data", os.fspath(lay.root), _stamp(lay))
    if key not in _CACHE:
        _forget(lay)
        _CACHE[key] = open_run_data(lay)
    return _CACHE[key]


def run_inputs(run, cfg: RunConfig, report: Optional[Callable] = None, eval_split: str = "test") -> RunInputs:
    """RunInputs of the run for `cfg`'s text encoder; text features come from the cache (encoded
    once on a miss). `report(frac, message)` sees the progress of a first build."""
    report = report or (lambda f, m="": None)
    lay = _layout(run)
    key = ("inputs", os.fspath(lay.root), _stamp(lay), eval_split,
           json.dumps(dataclasses.asdict(cfg.model), sort_keys=True), cfg.data.image_size, cfg.resolved_cache_dir())
    if key not in _CACHE:
        from .models.presets import build_model
        p = run_data(lay)
        encoder = build_model(cfg.model, cfg.data.image_size, seed=cfg.seed).text
        pairs, split = build_tensors(p, encoder, cfg.resolved_cache_dir(), eval_split=eval_split,
                                     progress=lambda f: report(f, "text features"))
        _CACHE[key] = RunInputs(p, pairs, split, eval_split)
    report(1.0, "inputs ready")
    return _CACHE[key]


def _stamp(lay: RunLayout) -> int:
    """Changes when the data stage writes the run's data again."""
    try:
        return os.stat(lay.data_record).st_mtime_ns
    except FileNotFoundError:
        return 0


def _forget(lay: RunLayout) -> None:
    root = os.fspath(lay.root)
    for k in [k for k in _CACHE if k[1] == root]:
        del _CACHE[k]
