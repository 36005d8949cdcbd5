"""`python -m mdw score --run RUN --pairs FILE`: audit pairs that were not in the training set."""
from __future__ import annotations

import os

from ..runs.layout import RunLayout
from ..runs.migrate import open_run
from ..runs.store import RunStore
from ..train.score import score_file


def add_parser(sub, runs_dir: str) -> None:
    p = sub.add_parser("score", help="score (image, caption) pairs with a run's experts: similarity, clean probability")
    p.add_argument("--run", required=True, help="a run id (in --runs) or a run folder")
    p.add_argument("--pairs", required=True, help="CSV/TSV/JSONL with image and caption columns")
    p.add_argument("--image-root", default="", help="folder the image paths are relative to (default: the file's)")
    p.add_argument("--out", default="", help="output CSV (default: <pairs>.scores.csv)")
    p.add_argument("--experts", default="dtcl", help="which experts of the run: dtcl | plain")
    p.add_argument("--runs", default=runs_dir)
    p.set_defaults(func=score)


def resolve_run_dir(run: str, runs_root: str) -> str:
    """A run folder given as a path, or a run id inside the runs folder (validated); the run is
    upgraded to the current format first (migrate.open_run)."""
    run_dir = run if RunLayout(run).config.is_file() else RunStore(runs_root).run_dir(run)
    open_run(run_dir)
    return run_dir


def score(args) -> int:
    run_dir = resolve_run_dir(args.run, args.runs)
    out = args.out or os.path.splitext(args.pairs)[0] + ".scores.csv"
    n = score_file(run_dir, args.pairs, out, args.image_root, args.experts)
    print(f"scored {n} pairs -> {out}")
    return 0
