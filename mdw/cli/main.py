"""`python -m mdw ...`: the command line. Each subcommand lives in its own module."""
from __future__ import annotations

import argparse
import os
import sys

for _k, _v in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"),
               ("HF_HUB_DISABLE_TELEMETRY", "1")):
    os.environ.setdefault(_k, _v)

from ..errors import MDWError  # noqa: E402
from . import bench_cmd, data_cmd, heatmap_cmd, run_cmd, score_cmd  # noqa: E402
from . import query_cmd  # noqa: E402


def default_runs_dir() -> str:
    return os.environ.get("MDW_RUNS", "runs")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mdw", description="MDW Workbench: noisy image-text dataset distillation")
    sub = p.add_subparsers(dest="command", required=True)
    data_cmd.add_parser(sub)
    run_cmd.add_parsers(sub, default_runs_dir())
    score_cmd.add_parser(sub, default_runs_dir())
    heatmap_cmd.add_parser(sub, default_runs_dir())
    query_cmd.add_parser(sub, default_runs_dir())
    bench_cmd.add_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MDWError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
