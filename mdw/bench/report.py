"""Writing benchmark results: flat JSON rows (dataset, eta, method, M?, metrics...) and a Markdown
table, with the config used recorded beside them."""
from __future__ import annotations

import json
import math
import os
import platform
import time

import torch

from ..runs.manager import repo_root
from ..runs.store import atomic_write_json, atomic_write_text


def portable(obj, root: str = ""):
    """obj with every absolute path made machine-free (issue 18: no machine path in a benchmark's
    config): inside the repository it becomes relative to it; elsewhere "(local path)" + its last
    name (a temp runs folder, an experts cache). Dicts, lists and tuples are walked; other values kept."""
    root = os.path.abspath(root or repo_root())
    if isinstance(obj, dict):
        return {k: portable(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v, root) for v in obj]
    if isinstance(obj, str) and os.path.isabs(obj) and "\n" not in obj:
        path = os.path.normpath(obj)
        if path == root or path.startswith(root + os.sep):
            return os.path.relpath(path, root)
        return f"(local path)/{os.path.basename(path)}"
    return obj


def clean_number(v):
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 4)
    return v


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor's model name (Linux: the first `model name` line of /proc/cpuinfo; elsewhere
    `platform.processor()`, or `platform.machine()` when that is empty). Two tables' seconds compare only
    on one model: the same code took 2.0-2.4x longer per distillation iteration on one 2-core cloud
    machine than on another (docs/distillation_record.md)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return {"device": dev, "cpu": cpu_model(), "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def markdown_table(rows: list, columns: list) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = ""
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            cells.append("–" if v is None else f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else
                         f"{v:.1f}" if isinstance(v, float) else str(v))
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


def write_results(out_dir: str, name: str, rows: list, config: dict, markdown: str) -> tuple:
    """docs/benchmarks/<name>.json (rows), <name>.config.json, <name>.md; returns the paths."""
    rows = [{k: clean_number(v) for k, v in r.items()} for r in rows]
    paths = tuple(os.path.join(out_dir, f"{name}{ext}") for ext in (".json", ".config.json", ".md"))
    atomic_write_json(paths[0], rows)
    atomic_write_json(paths[1], {"config": portable(config), "environment": environment()})
    atomic_write_text(paths[2], markdown)
    return paths


def read_previous(out_dir: str, name: str):
    """(rows, config) that an earlier run wrote to out_dir/<name>.json and .config.json, or None."""
    path = os.path.join(out_dir, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    with open(os.path.join(out_dir, f"{name}.config.json"), encoding="utf-8") as f:
        return rows, json.load(f)["config"]


def earlier_runs(old_config: dict, mine: dict) -> list:
    """The run configs an earlier table at the same place records ("runs", or the one config an older
    table holds), without this run's own partial writes. `mine` is compared as write_results stores it
    (machine paths made portable), so an absolute folder or data path does not make it a new run."""
    me = portable(mine)
    return [c for c in old_config.get("runs", [old_config]) if c != me]
