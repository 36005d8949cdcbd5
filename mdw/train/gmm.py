"""Clean probabilities from per-pair losses (METHOD §2, as in NCR): a two-component 1-D Gaussian
mixture on min-max normalised losses; w_n = posterior of the low-mean component.

A mixture is only used when the losses carry two components (ours; a GMM splits any sample, pure
noise included). The split is refused, and every pair trusted (w = 1, nothing flagged), when
  1. the losses' spread is below SPREAD_FLOOR of their size: (max − min) < 1e-4 · mean |loss|
     (collapsed experts give log B for every pair, up to rounding), or
  2. one Gaussian explains them at least as well as two by the Bayesian information criterion
     (Schwarz 1978): BIC(2) ≥ BIC(1), BIC = −2 log L + k log n, k = 2 (one component) or 5 (two),
     both fit by sklearn on the normalised losses.
`split` and `reason` record the decision; DTCL writes a warning event and the app shows a banner.

`LossGMM` keeps the fit (normalisation, means, variances, weights), so pairs that were not in the
training set can be scored later against the same mixture (`python -m mdw score`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.mixture import GaussianMixture

from ..errors import DivergenceError

SPREAD_FLOOR = 1e-4
REG_COVAR = 5e-4


@dataclass
class LossGMM:
    lo: float
    hi: float
    means: list        # [clean, noisy]
    variances: list
    weights: list
    split: bool = True  # False: the losses show no two components; every pair is trusted
    reason: str = ""    # why there is no split (empty when split)

    @classmethod
    def fit(cls, losses: np.ndarray, seed: int = 0) -> "LossGMM":
        """Fit on per-pair losses (N,) float; a LossGMM with split=False when they are not bimodal
        (module docstring). Raises: DivergenceError when a loss is NaN or inf."""
        x = np.asarray(losses, dtype=np.float64)
        if not np.isfinite(x).all():
            raise DivergenceError("experts", "the scoring pass", "a per-pair loss",
                                  "lower experts.lr or set experts.grad_clip")
        lo, hi = (float(x.min()), float(x.max())) if len(x) else (0.0, 0.0)
        scale = float(np.abs(x).mean()) if len(x) else 0.0
        if len(x) < 4 or hi - lo <= SPREAD_FLOOR * scale or hi - lo < 1e-12:
            return cls.no_split(lo, hi, f"the {len(x)} losses are all equal to within {hi - lo:.3g} "
                                        f"(mean {scale:.4g}; a split needs a spread of at least "
                                        f"{SPREAD_FLOOR:g} of the mean)")
        z = ((x - lo) / (hi - lo)).reshape(-1, 1)
        g = GaussianMixture(n_components=2, max_iter=20, tol=1e-3, reg_covar=REG_COVAR, random_state=seed).fit(z)
        bic1 = float(GaussianMixture(n_components=1, reg_covar=REG_COVAR).fit(z).bic(z))
        bic2 = float(g.bic(z))
        if bic2 >= bic1:
            return cls.no_split(lo, hi, f"one Gaussian fits the {len(x)} losses as well as two "
                                        f"(BIC {bic1:.1f} for one, {bic2:.1f} for two)")
        order = np.argsort(g.means_.ravel())  # clean = the low-loss component
        return cls(lo, hi, g.means_.ravel()[order].tolist(), g.covariances_.ravel()[order].tolist(),
                   g.weights_.ravel()[order].tolist())

    @classmethod
    def no_split(cls, lo: float, hi: float, reason: str) -> "LossGMM":
        return cls(lo, hi, [0.0, 1.0], [1.0, 1.0], [1.0, 0.0], split=False, reason=reason)

    def posterior(self, losses: np.ndarray) -> np.ndarray:
        """P(clean | loss) (N,) float64 for any losses (N,) (values outside the fitted range are
        allowed); all ones when the fit found no split."""
        x = (np.asarray(losses, dtype=np.float64) - self.lo) / max(self.hi - self.lo, 1e-12)
        if not self.split:
            return np.ones(len(x))
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
