"""Progress reporting for long steps: one callback `report(frac, message)` for stage code, fanned
out to the run's status.json (through RunContext) and, in a terminal, a tqdm bar."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Optional

from tqdm import tqdm

Report = Callable[..., None]


@contextmanager
def progress_bar(desc: str, sink: Optional[Report] = None, show: Optional[bool] = None):
    """Yields report(frac, message=""); shows a bar when stderr is a terminal (or show=True)."""
    show = sys.stderr.isatty() if show is None else show
    bar = tqdm(total=1000, desc=desc, unit="‰", leave=True, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}") if show else None

    def report(frac: float, message: str = ""):
        frac = min(max(float(frac), 0.0), 1.0)
        if sink is not None:
            sink(frac, message)
        if bar is not None:
            bar.n = int(frac * 1000)
            if message:
                bar.set_postfix_str(message, refresh=False)
            bar.refresh()

    try:
        yield report
    finally:
        if bar is not None:
            bar.close()
