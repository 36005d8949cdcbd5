"""Audit decisions about a run's pairs, kept in runs/<id>/audit/decisions.jsonl (append-only).

One JSON object a line: {"time", "target": "pair" | "distilled", "item": int, "decision", "comment"}.
A later line about the same (target, item) supersedes an earlier one; nothing is ever rewritten.
`record_decision` returns only after the line is flushed and fsync'ed and read back, so a caller
(the app) can confirm a decision knowing it is on disk.
"""
from __future__ import annotations

import os
import time

from ..csvio import csv_text
from ..errors import RunError
from .layout import RunLayout
from .store import append_jsonl, read_jsonl

TARGETS = ("pair", "distilled")
DECISIONS = {"pair": ("noisy", "clean", "unsure"), "distilled": ("accept", "reject", "unsure")}
MAX_COMMENT = 2000


def decisions_path(run_dir) -> str:
    return os.fspath(RunLayout(run_dir).audit_decisions)


def record_decision(run_dir: str, target: str, item: int, decision: str, comment: str = "") -> dict:
    """Append one decision (validated) and make sure it is on disk; returns the stored row."""
    if target not in TARGETS:
        raise RunError(f"audit: unknown target {target!r}; known: {', '.join(TARGETS)}")
    if decision not in DECISIONS[target]:
        raise RunError(f"audit: unknown decision {decision!r} for {target}s; known: {', '.join(DECISIONS[target])}")
    try:
        item = int(item)
    except (TypeError, ValueError):
        raise RunError(f"audit: item must be an integer, got {item!r}") from None
    if item < 0:
        raise RunError(f"audit: item must be >= 0, got {item}")
    row = {"time": time.time(), "target": target, "item": item, "decision": decision,
           "comment": str(comment or "")[:MAX_COMMENT]}
    path = decisions_path(run_dir)
    append_jsonl(path, row)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if not any(r == row for r in read_jsonl(path)[-50:]):
        raise RunError(f"audit: the decision was not found in {path} after writing it")
    return row


def read_decisions(run_dir: str, target: str | None = None) -> list:
    """Every decision line, oldest first (optionally of one target)."""
    return [r for r in read_jsonl(decisions_path(run_dir)) if target is None or r.get("target") == target]


def latest_decisions(run_dir: str, target: str) -> dict:
    """item -> the latest decision row about it."""
    out: dict = {}
    for r in read_decisions(run_dir, target):
        out[int(r["item"])] = r
    return out


def decisions_csv(run_dir: str) -> str:
    """All decision lines as CSV text (time as ISO, UTC; comments escaped against spreadsheet
    formulas by mdw/csvio.py)."""
    rows = ([time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(r.get("time", 0)))), r.get("target"),
             r.get("item"), r.get("decision"), r.get("comment", "")] for r in read_decisions(run_dir))
    return csv_text(["time", "target", "item", "decision", "comment"], rows)
