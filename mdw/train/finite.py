"""The one divergence check every training loop calls (experts, distillation, students, baselines):
a non-finite loss, parameter or step size stops the stage with a DivergenceError that names the
stage, where (epoch / iteration / step), the quantity and a hint, instead of training on NaN and
writing a NaN result that looks real."""
from __future__ import annotations

import math
from typing import Iterable, Union

import numpy as np
import torch

from ..errors import DivergenceError

Checked = Union[float, int, torch.Tensor, Iterable[torch.Tensor]]


def is_finite(x: Checked) -> bool:
    """True when x (a number, a tensor, or an iterable of tensors) holds only finite values."""
    if isinstance(x, (float, int)):
        return math.isfinite(x)
    if isinstance(x, torch.Tensor):
        return bool(torch.isfinite(x.detach()).all())
    if isinstance(x, (np.ndarray, np.generic)):
        return bool(np.isfinite(x).all())
    return all(is_finite(t) for t in x)


def check_finite(x: Checked, stage: str, at: str, quantity: str, hint: str = "") -> None:
    """Raise DivergenceError(stage, at, quantity, hint) unless every value of x is finite.

    x: a Python number, a tensor or numpy array of any shape and dtype, or an iterable of them (e.g. a model's
    parameters). `at` says where, e.g. "epoch 3, track A, batch 12" or "iteration 2".
    Raises: DivergenceError.
    """
    if not is_finite(x):
        raise DivergenceError(stage, at, quantity, hint)


def lower_lr_hint(*keys_values: tuple) -> str:
    """'lower experts.lr (now 1000)' style hint from (key, value) pairs."""
    return "lower " + " or ".join(f"{k} (now {v:g})" for k, v in keys_values)
