"""How well clean scores find the injected mismatched pairs (noisy = the positive class).

    m = detection_metrics(clean, is_noisy, 0.5)   # precision, recall, f1, flagged, noisy, auc
    c = detection_curves(clean, is_noisy)         # ROC / PR of ≤ CURVE_POINTS points each, auc of all pairs
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import auc as trapezoid_auc
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

CURVE_POINTS = 1000   # most points of a curve sent to the browser (a 1M-pair ROC has up to ~1M corners)


def threshold_metrics(clean_score: np.ndarray, is_noisy: np.ndarray, threshold: float = 0.5) -> dict:
    """precision / recall / F1 of the flags score < threshold, and the counts flagged / noisy."""
    flags = np.asarray(clean_score, dtype=np.float64) < threshold
    y = np.asarray(is_noisy, dtype=bool)
    tp = int((flags & y).sum())
    precision = tp / max(int(flags.sum()), 1)
    recall = tp / max(int(y.sum()), 1)
    return {"precision": precision, "recall": recall,
            "f1": 0.0 if tp == 0 else 2 * precision * recall / (precision + recall),
            "flagged": int(flags.sum()), "noisy": int(y.sum())}


def detection_metrics(clean_score: np.ndarray, is_noisy: np.ndarray, threshold: float = 0.5) -> dict:
    """threshold_metrics and the ROC-AUC of 1 − score for noisy pairs (NaN with one class only)."""
    clean_score = np.asarray(clean_score, dtype=np.float64)
    y = np.asarray(is_noisy, dtype=bool)
    out = threshold_metrics(clean_score, y, threshold)
    out["auc"] = float(roc_auc_score(y, -clean_score)) if 0 < y.sum() < len(y) else float("nan")
    return out


def detection_curves(clean_score: np.ndarray, is_noisy: np.ndarray, max_points: int = CURVE_POINTS) -> dict:
    """ROC (fpr, tpr) and precision-recall (precision, recall) curves for plots, noisy as positive,
    each reduced to at most max_points points (lists of float; reduce_curve), and "auc": the ROC-AUC
    of the full curve (all pairs; equal to roc_auc_score). Needs both classes (sklearn's error otherwise)."""
    y = np.asarray(is_noisy, dtype=bool)
    s = -np.asarray(clean_score, dtype=np.float64)
    fpr, tpr, _ = roc_curve(y, s)
    prec, rec, _ = precision_recall_curve(y, s)
    keep_roc, keep_pr = reduce_curve(fpr, tpr, max_points), reduce_curve(rec, prec, max_points)
    return {"fpr": fpr[keep_roc].tolist(), "tpr": tpr[keep_roc].tolist(),
            "precision": prec[keep_pr].tolist(), "recall": rec[keep_pr].tolist(),
            "auc": float(trapezoid_auc(fpr, tpr)), "points": int(len(fpr)), "points_pr": int(len(prec))}


def reduce_curve(x: np.ndarray, y: np.ndarray, max_points: int = CURVE_POINTS) -> np.ndarray:
    """Sorted int64 indices of at most max_points points of the curve (x, y) (float arrays of one
    length n, in [0, 1]) that keep its drawn shape: half evenly spaced along the curve's index (its
    thresholds at quantiles), half evenly spaced along its length (where it turns fast, e.g. a
    precision-recall curve's start), both end points always kept. All n when n <= max_points."""
    n = len(x)
    if max_points <= 0 or n <= max_points:
        return np.arange(n)
    if max_points < 4:
        return np.unique(np.linspace(0, n - 1, max(max_points, 2)).round().astype(np.int64))
    half = max_points // 2
    by_index = np.linspace(0, n - 1, half).round().astype(np.int64)
    step = np.hypot(np.diff(x), np.diff(y))
    length = np.concatenate([[0.0], np.cumsum(step)])
    marks = np.linspace(0.0, length[-1], max_points - half)
    by_length = np.minimum(np.searchsorted(length, marks, side="left"), n - 1)
    return np.unique(np.concatenate([[0, n - 1], by_index, by_length]))
