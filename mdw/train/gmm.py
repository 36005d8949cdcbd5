"""Clean probabilities from per-pair losses (METHOD §2, as in NCR): a two-component 1-D Gaussian
mixture on min-max normalised losses; w_n = posterior of the low-mean component.

`LossGMM` keeps the fit (normalisation, means, variances, weights), so pairs that were not in the
training set can be scored later against the same mixture (`python -m mdw score`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.mixture import GaussianMixture


@dataclass
class LossGMM:
    lo: float
    hi: float
    means: list        # [clean, noisy]
    variances: list
    weights: list

    @classmethod
    def fit(cls, losses: np.ndarray, seed: int = 0) -> "LossGMM":
        x = np.asarray(losses, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValueError("per-pair losses contain NaN or inf")
        lo, hi = float(x.min()), float(x.max())
        if hi - lo < 1e-12:  # nothing to split: every pair looks the same
            return cls(lo, hi, [0.0, 1.0], [1.0, 1.0], [1.0, 0.0])
        g = GaussianMixture(n_components=2, max_iter=20, tol=1e-3, reg_covar=5e-4, random_state=seed)
        g.fit(((x - lo) / (hi - lo)).reshape(-1, 1))
        order = np.argsort(g.means_.ravel())  # clean = the low-loss component
        return cls(lo, hi, g.means_.ravel()[order].tolist(), g.covariances_.ravel()[order].tolist(),
                   g.weights_.ravel()[order].tolist())

    def posterior(self, losses: np.ndarray) -> np.ndarray:
        """P(clean | loss) for any losses (values outside the fitted range are allowed)."""
        x = (np.asarray(losses, dtype=np.float64) - self.lo) / max(self.hi - self.lo, 1e-12)
        m, v, w = (np.asarray(a, dtype=np.float64) for a in (self.means, self.variances, self.weights))
        log_p = np.log(np.maximum(w, 1e-300)) - 0.5 * np.log(2 * np.pi * v) - 0.5 * (x[:, None] - m) ** 2 / v
        log_p -= log_p.max(axis=1, keepdims=True)
        p = np.exp(log_p)
        return p[:, 0] / p.sum(axis=1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LossGMM":
        return cls(**d)


def clean_probability(losses: np.ndarray, seed: int = 0) -> np.ndarray:
    return LossGMM.fit(losses, seed).posterior(losses)
