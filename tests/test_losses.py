import math

import numpy as np
import pytest
import torch

from mdw.evaluate.detection import detection_metrics
from mdw.evaluate.retrieval import recall_at_k, recall_brute_force
from mdw.train.gmm import clean_probability
from mdw.train.losses import (complementary, complementary_per_pair, infonce, infonce_per_pair,
                              soft_contrastive, weighted_infonce)

Z = torch.tensor([[2.0, 0.0], [1.0, 3.0]])


def test_infonce_by_hand():
    # row 0: CE = -log(e^2/(e^2+e^0)); column 0: -log(e^2/(e^2+e^1)); ...
    r0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    c0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(1)))
    r1 = -math.log(math.exp(3) / (math.exp(1) + math.exp(3)))
    c1 = -math.log(math.exp(3) / (1 + math.exp(3)))
    per = infonce_per_pair(Z)
    assert per.tolist() == pytest.approx([(r0 + c0) / 2, (r1 + c1) / 2], abs=1e-6)
    assert infonce(Z).item() == pytest.approx((r0 + c0 + r1 + c1) / 4, abs=1e-6)


def test_complementary_by_hand():
    # i->t: p_01 = softmax(row0)[1], p_10 = softmax(row1)[0]; t->i: on columns.
    p01 = 1 / (math.exp(2) + 1)
    p10 = math.exp(1) / (math.exp(1) + math.exp(3))
    q10 = 1 / (1 + math.exp(3))            # column 1 is (0, 3): entry of image 0
    q01 = math.exp(1) / (math.exp(2) + math.exp(1))  # column 0 is (2, 1): entry of image 1
    per = complementary_per_pair(Z)
    assert per[0].item() == pytest.approx(-math.log(1 - p01) - math.log(1 - q01), abs=1e-6)
    assert per[1].item() == pytest.approx(-math.log(1 - p10) - math.log(1 - q10), abs=1e-6)
    assert complementary(Z).item() == pytest.approx(per.mean().item())


def test_complementary_is_bounded_and_ignores_the_positive():
    # Pulling the positive logit up or down changes InfoNCE a lot but leaves the
    # complementary loss bounded: it only depends on negatives' probabilities.
    z = torch.zeros(4, 4)
    z_bad = z.clone(); z_bad[0, 0] = -50.0
    assert infonce_per_pair(z_bad)[0] > 20
    # with the positive at -inf each side spreads 1/3 over 3 negatives: 2 * 3 * log(3/2) at most
    assert complementary_per_pair(z_bad)[0].item() == pytest.approx(6 * math.log(1.5), abs=1e-4)


def test_weighted_infonce_weights_and_zero():
    z = torch.randn(5, 5)
    w = torch.tensor([1.0, 0, 0, 0, 0])
    assert weighted_infonce(z, w).item() == pytest.approx(infonce_per_pair(z)[0].item(), abs=1e-6)
    assert weighted_infonce(z, torch.zeros(5)).item() == 0.0


def test_soft_contrastive_equals_infonce_for_identity():
    z = torch.randn(6, 6)
    assert soft_contrastive(z, torch.eye(6)).item() == pytest.approx(infonce(z).item(), abs=1e-5)


def test_gmm_splits_planted_bimodal_losses():
    rng = np.random.default_rng(0)
    clean = rng.normal(0.5, 0.15, 700)
    noisy = rng.normal(3.0, 0.4, 300)
    w = clean_probability(np.concatenate([clean, noisy]))
    assert (w[:700] > 0.5).mean() > 0.98 and (w[700:] < 0.5).mean() > 0.98
    m = detection_metrics(w, np.r_[np.zeros(700), np.ones(300)])
    assert m["auc"] > 0.99 and m["precision"] > 0.97 and m["recall"] > 0.97


def test_faiss_recall_equals_brute_force_and_perfect_embedding():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(50, 16)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    owner = np.repeat(np.arange(50), 3)
    txt = img[owner] + 0.6 * rng.normal(size=(150, 16)).astype(np.float32)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    fa, bf = recall_at_k(img, txt, owner), recall_brute_force(img, txt, owner)
    for k, v in bf.items():
        assert fa[k] == pytest.approx(v)
    perfect = recall_at_k(img, img[owner], owner)
    assert all(perfect[f"{d}@{k}"] == 100.0 for d in ("IR", "TR") for k in (1, 5, 10))


def test_gmm_posterior_matches_sklearn_and_round_trips():
    from sklearn.mixture import GaussianMixture

    from mdw.train.gmm import LossGMM
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(1.0, 0.2, 400), rng.normal(2.5, 0.3, 100)])
    g = LossGMM.fit(x)
    ref = GaussianMixture(2, max_iter=20, tol=1e-3, reg_covar=5e-4, random_state=0).fit(
        ((x - x.min()) / (x.max() - x.min())).reshape(-1, 1))
    clean = int(np.argmin(ref.means_.ravel()))
    xn = ((x - x.min()) / (x.max() - x.min())).reshape(-1, 1)
    assert np.allclose(g.posterior(x), ref.predict_proba(xn)[:, clean], atol=1e-6)
    again = LossGMM.from_dict(g.to_dict())
    assert np.allclose(again.posterior(np.array([0.5, 3.0])), g.posterior(np.array([0.5, 3.0])))
    assert g.posterior(np.array([0.9]))[0] > 0.9 and g.posterior(np.array([2.6]))[0] < 0.1
