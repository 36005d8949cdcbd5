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


def detection_curves(clean_score: np.ndarray, is_noisy: np.ndarray) -> dict:
    """ROC and precision-recall curves (for plots), noisy as positive."""
    y = np.asarray(is_noisy, dtype=bool)
    s = -np.asarray(clean_score, dtype=np.float64)
    fpr, tpr, _ = roc_curve(y, s)
    prec, rec, _ = precision_recall_curve(y, s)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "precision": prec.tolist(), "recall": rec.tolist()}
