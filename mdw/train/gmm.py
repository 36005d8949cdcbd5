"""Clean probabilities from per-pair losses (METHOD §2, as in NCR): a two-component 1-D Gaussian
mixture on min-max normalised losses; w_n = posterior of the low-mean component."""
from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture


def clean_probability(losses: np.ndarray, seed: int = 0) -> np.ndarray:
    x = np.asarray(losses, dtype=np.float64)
    lo, hi = x.min(), x.max()
    if not np.isfinite(x).all():
        raise ValueError("per-pair losses contain NaN or inf")
    if hi - lo < 1e-12:
        return np.ones_like(x)
    x = ((x - lo) / (hi - lo)).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=20, tol=1e-3, reg_covar=5e-4, random_state=seed)
    gmm.fit(x)
    clean = int(np.argmin(gmm.means_.ravel()))
    return gmm.predict_proba(x)[:, clean]
