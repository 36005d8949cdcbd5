"""How well clean scores find the injected mismatched pairs (noisy = the positive class)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve


def detection_metrics(clean_score: np.ndarray, is_noisy: np.ndarray, threshold: float = 0.5) -> dict:
    """ROC-AUC of 1 − score for noisy pairs; precision / recall / F1 of the flags score < threshold."""
    clean_score = np.asarray(clean_score, dtype=np.float64)
    y = np.asarray(is_noisy, dtype=bool)
    flags = clean_score < threshold
    tp = int((flags & y).sum())
    precision = tp / max(int(flags.sum()), 1)
    recall = tp / max(int(y.sum()), 1)
    out = {"precision": precision, "recall": recall,
           "f1": 0.0 if tp == 0 else 2 * precision * recall / (precision + recall),
           "flagged": int(flags.sum()), "noisy": int(y.sum())}
    out["auc"] = float(roc_auc_score(y, -clean_score)) if 0 < y.sum() < len(y) else float("nan")
    return out


def detection_curves(clean_score: np.ndarray, is_noisy: np.ndarray, max_points: int = 2000) -> dict:
    """ROC and precision-recall curves (for plots), noisy as positive."""
    y = np.asarray(is_noisy, dtype=bool)
    s = -np.asarray(clean_score, dtype=np.float64)
    fpr, tpr, _ = roc_curve(y, s)
    prec, rec, _ = precision_recall_curve(y, s)
    keep_roc, keep_pr = _thin(len(fpr), max_points), _thin(len(prec), max_points)
    return {"fpr": fpr[keep_roc].tolist(), "tpr": tpr[keep_roc].tolist(),
            "precision": prec[keep_pr].tolist(), "recall": rec[keep_pr].tolist()}


def _thin(n: int, max_points: int) -> np.ndarray:
    """At most max_points evenly spaced indices of a curve of n points, both ends kept (a curve of
    30,000 pairs drawn with 2,000 points looks the same and is 15× less to send and draw)."""
    if max_points <= 0 or n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
