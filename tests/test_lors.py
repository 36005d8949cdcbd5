"""LoRS as published (docs/lors.md): S̃ = diag(ω) + (α/r) L Rᵀ, starting at the identity, and its
weighted BCE, checked against values worked out by hand."""
import math

import numpy as np
import pytest
import torch

from helpers import assert_adjoint_equals_unrolled
from mdw.config import ConfigError, DistillConfig, ModelConfig
from mdw.distill.lors import lors_init, lors_scale, lors_similarity
from mdw.distill.matching import Student, match_adjoint
from mdw.distill.synset import DistilledSet
from mdw.models.presets import build_model
from mdw.train.losses import loss_function, lors_wbce, soft_contrastive, wbce

LN2, LN3, LN4, LN43 = math.log(2), math.log(3), math.log(4), math.log(4 / 3)


def test_lors_wbce_on_a_2x2_by_hand():
    # z = ln 3 gives σ = 3/4, z = −ln 3 gives σ = 1/4, z = 0 gives σ = 1/2. (LoRS's ε = 1e-6 inside
    # the logs moves these values by ~1e-6; eps=0 checks the formula exactly, the default within 1e-5.)
    z = torch.tensor([[LN3, -LN3], [0.0, LN3]], dtype=torch.float64)
    s = torch.tensor([[1.0, 0.0], [0.2, 0.9]], dtype=torch.float64)
    # positives (S > 0.5): (0,0): −ln(3/4) = ln(4/3);  (1,1): 0.9 ln(4/3) + 0.1 ln 4
    # negatives:           (0,1): −ln(1 − 1/4) = ln(4/3);  (1,0): −0.2 ln ½ − 0.8 ln ½ = ln 2
    pos = (LN43 + 0.9 * LN43 + 0.1 * LN4) / 2          # 0.3426127
    neg = (LN43 + LN2) / 2                              # 0.4904146
    assert lors_wbce(z, s, eps=0.0).item() == pytest.approx(0.5 * (pos + neg), abs=1e-12)
    assert lors_wbce(z, s).item() == pytest.approx(0.5 * (pos + neg), abs=1e-5)
    assert 0.5 * (pos + neg) == pytest.approx(0.4165137, abs=1e-7)


def test_lors_wbce_3x3_targets_outside_0_1_and_the_mask_at_one_half():
    # z = ln 3 everywhere: ℓ_ij = S ln(4/3) + (1 − S) ln 4 = ln 4 − S ln 3 (linear in S, no clipping).
    z = torch.full((3, 3), LN3, dtype=torch.float64)
    s = torch.tensor([[1.2, 0.5, -0.1], [0.0, 1.0, 0.5], [0.6, 0.0, 0.8]], dtype=torch.float64, requires_grad=True)
    # positives S > 0.5: 1.2, 1.0, 0.6, 0.8 (mean S 0.9); negatives: 0.5, −0.1, 0, 0.5, 0 (mean S 0.18)
    # L = ½ [(ln 4 − 0.9 ln 3) + (ln 4 − 0.18 ln 3)] = ln 4 − 0.54 ln 3 = 0.7930437
    loss = lors_wbce(z, s, eps=0.0)
    assert loss.item() == pytest.approx(LN4 - 0.54 * LN3, abs=1e-12)
    assert loss.item() == pytest.approx(0.7930437, abs=1e-7)
    # ∂ℓ/∂S = −z = −ln 3; each positive weighs ½·¼, each negative ½·⅕
    loss.backward()
    pos = s.detach() > 0.5
    expect = torch.where(pos, torch.tensor(-LN3 / 8, dtype=torch.float64), torch.tensor(-LN3 / 10, dtype=torch.float64))
    assert torch.allclose(s.grad, expect, atol=1e-12)


def test_identity_targets_old_wbce_is_twice_lors_and_gradients_reach_the_logits():
    # with S = I both average the positives and the negatives; ours summed the two means, LoRS halves them
    z = torch.tensor([[2.0, -1.0], [0.5, 1.5]], dtype=torch.float64, requires_grad=True)
    eye = torch.eye(2, dtype=torch.float64)
    assert wbce(z, eye).item() == pytest.approx(2 * lors_wbce(z, eye, eps=0.0).item(), rel=1e-12)
    lors_wbce(z, eye, eps=0.0).backward()
    # ∂L/∂z_ij = ½ (σ(z_ij) − S_ij) / |set|: (0,0): ½(σ(2) − 1)/2
    assert z.grad[0, 0].item() == pytest.approx(0.5 * (1 / (1 + math.exp(-2)) - 1) / 2, abs=1e-12)
    assert z.grad[1, 0].item() == pytest.approx(0.5 * (1 / (1 + math.exp(-0.5))) / 2, abs=1e-12)


def test_targets_above_one_keep_the_loss_bounded_as_in_lors():
    # S = 2 on a 1×1 (one positive, no negative): as z → ∞, ℓ → −2 log(1 + ε) − (1 − 2) log ε ≈ log ε
    # = −13.8155; L = ½ ℓ (the empty negative mean is 0). Without ε it would fall without bound (−z).
    s = torch.tensor([[2.0]], dtype=torch.float64)
    for big in (50.0, 100.0):
        assert lors_wbce(torch.tensor([[big]], dtype=torch.float64), s).item() == pytest.approx(
            0.5 * math.log(1e-6), abs=1e-5)
    # without ε: ℓ = −2 log σ(20) + log(1 − σ(20)) ≈ −20, L ≈ −10 (and −∞ once σ rounds to 1)
    assert lors_wbce(torch.tensor([[20.0]], dtype=torch.float64), s, eps=0.0).item() == pytest.approx(-10.0, abs=1e-6)


def test_similarity_by_hand_and_scale():
    # diag(1, 2) + ½ · [[1,2],[3,4]] @ [[0,1],[1,0]]ᵀ = diag(1, 2) + ½ · [[2,1],[4,3]] = [[2, .5], [2, 3.5]]
    w = torch.tensor([1.0, 2.0])
    left = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    right = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert torch.equal(lors_similarity(w, left, right, 0.5), torch.tensor([[2.0, 0.5], [2.0, 3.5]]))
    assert lors_scale(3.0, 10) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        lors_similarity(w, left, right[:1], 0.5)
    with pytest.raises(ValueError):
        lors_scale(1.0, 0)


def test_initial_matrix_is_the_identity_as_the_paper_specifies(tmp_path):
    images = torch.randint(0, 256, (20, 8, 8, 3), dtype=torch.uint8)
    syn = DistilledSet.from_real(images, torch.randn(20, 16), np.arange(20), lr=0.03, labels="lors", rank=4,
                                 lors_alpha=3.0, seed=1)
    # ω = 1, R = 0, L ~ N(0, 1): S̃₀ = I exactly, scale α/r = 3/4
    assert torch.equal(syn.p(), torch.eye(20))
    assert torch.equal(syn.w, torch.ones(20)) and torch.equal(syn.v, torch.zeros(20, 4))
    assert syn.u.shape == (20, 4) and 0.7 < syn.u.std().item() < 1.3 and syn.sim_scale == pytest.approx(0.75)
    assert syn.label_leaves() == [syn.w, syn.u, syn.v]
    w, left, right = lors_init(20, 4, seed=1)
    assert torch.equal(left, syn.u)
    syn.v += 0.1
    syn.save(str(tmp_path / "s.pt"))
    back = DistilledSet.load(str(tmp_path / "s.pt"))
    assert back.labels == "lors" and back.sim_scale == pytest.approx(0.75) and torch.equal(back.p(), syn.p())
    assert not torch.equal(back.p(), torch.eye(20))


def test_gradients_reach_the_factors_lora_style():
    # at the start R = 0, so ∂S̃/∂L = 0: only ω and R get a gradient; once R moves, L does too
    w, left, right = (t.double().requires_grad_(True) for t in lors_init(3, 2, seed=0))
    z = torch.tensor([[3.0, 1.0, -2.0], [0.5, 2.0, 1.5], [-1.0, 2.5, 1.0]], dtype=torch.float64)
    loss = lors_wbce(z, lors_similarity(w, left, right, 0.5), eps=0.0)
    gw, gl, gr = torch.autograd.grad(loss, [w, left, right])
    assert torch.equal(gl, torch.zeros_like(gl)) and gr.abs().max() > 0
    # ∂L/∂ω_i = ∂L/∂S_ii = −z_ii / (2 · 3 positives)
    assert torch.allclose(gw, -z.diagonal() / 6, atol=1e-12)
    right2 = (right + 0.1).detach().requires_grad_(True)
    gl2 = torch.autograd.grad(lors_wbce(z, lors_similarity(w, left, right2, 0.5)), left)[0]
    assert gl2.abs().max() > 0


def _tiny(m=6, size=32):
    torch.manual_seed(0)
    model = build_model(ModelConfig(device="cpu"), size, seed=0).double()
    images = torch.randint(0, 256, (m, size, size, 3), dtype=torch.uint8)
    syn = DistilledSet.from_real(images, torch.randn(m, model.g0_dim), np.arange(m), lr=0.05, labels="lors",
                                 rank=2, lors_alpha=3.0)
    for name in ("images", "text", "z", "log_alpha", "u", "v", "w"):
        setattr(syn, name, getattr(syn, name).double())
    start = model.flat_params().double()
    target = start + 0.01 * torch.randn_like(start)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randperm(m, generator=gen)[:4] for _ in range(3)]
    return Student(model, "lors"), syn, start, target, batches


def test_trajectory_matching_gradients_reach_omega_l_r_and_adjoint_equals_unrolled():
    student, syn, start, target, batches = _tiny()
    assert student.loss_fn is lors_wbce
    syn.requires_grad_(True)
    match_adjoint(student, syn, start, target, batches)
    assert syn.w.grad.abs().max() > 0 and syn.v.grad.abs().max() > 0 and torch.equal(syn.u.grad, torch.zeros_like(syn.u))
    for t in syn.tensors():
        t.grad = None
    with torch.no_grad():
        syn.v += 0.2 * torch.randn_like(syn.v)   # away from the start, so L's gradient is not zero
    assert_adjoint_equals_unrolled(student, syn, start, target, batches)


def test_config_names_and_defaults():
    d = DistillConfig()
    assert (d.labels, d.loss) == ("soft", "soft")          # MDW's behaviour unchanged
    DistillConfig(labels="lors", loss="lors").validate()
    with pytest.raises(ConfigError):
        DistillConfig(labels="lors", rank=0).validate()
    assert loss_function("lors") is lors_wbce and loss_function("soft") is soft_contrastive
    with pytest.raises(ValueError):
        loss_function("bce")
