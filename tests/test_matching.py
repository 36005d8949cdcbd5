"""Trajectory matching: the constant-memory (adjoint) gradients equal the fully unrolled ones."""
import numpy as np
import pytest
import torch

from helpers import assert_adjoint_equals_unrolled, tiny_setup
from mdw.distill.matching import match_adjoint, match_unrolled
from mdw.distill.synset import DistilledSet, decode_text


@pytest.mark.parametrize("loss", ["soft", "wbce"])
def test_adjoint_gradients_equal_the_unrolled_reference(loss):
    student, syn, start, target, batches = tiny_setup(loss)
    ref = match_unrolled(student, syn, start, target, batches)
    ref.backward()
    ref_grads = [t.grad.clone() for t in syn.tensors()]
    for t in syn.tensors():
        t.grad = None
    val = match_adjoint(student, syn, start, target, batches)
    assert val == pytest.approx(ref.item(), rel=1e-9)
    for name, r, t in zip(("images", "text", "z", "log_alpha"), ref_grads, syn.tensors()):
        assert r.abs().max() > 0, name
        assert torch.allclose(t.grad, r, rtol=1e-6, atol=1e-10 * r.abs().max().item()), name


def test_p_starts_near_identity_and_decoding_finds_the_init_captions():
    images = torch.zeros(5, 8, 8, 3, dtype=torch.uint8)
    g0 = torch.randn(20, 16)
    syn = DistilledSet.from_real(images, g0[[3, 7, 1, 0, 9]], np.array([3, 7, 1, 0, 9]), lr=0.01)
    p = syn.p()
    assert 0 <= p.min() and p.max() <= 1
    assert torch.all(p.diagonal() > 0.95) and p[~torch.eye(5, dtype=torch.bool)].max() < 0.05
    idx, sims = decode_text(syn.text, g0, k=2)
    assert idx[:, 0].tolist() == [3, 7, 1, 0, 9] and np.allclose(sims[:, 0], 1.0, atol=1e-5)
    # read in chunks from memory-mapped rows (a run's text cache), the same answer as all at once
    from mdw.train.data import Rows
    text = torch.randn(6, 16)
    full_i, full_s = decode_text(text, g0, k=4)
    part_i, part_s = decode_text(text, Rows(g0.numpy()), k=4, chunk=3)
    assert np.array_equal(full_i, part_i) and np.allclose(full_s, part_s, atol=1e-6)


def test_save_load_round_trip(tmp_path):
    images = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)
    syn = DistilledSet.from_real(images, torch.randn(4, 16), np.arange(4), lr=0.02, meta={"M": 4})
    syn.images += 0.1
    path = str(tmp_path / "distilled.pt")
    syn.save(path)
    back = DistilledSet.load(path)
    for a, b in zip(syn.tensors(), back.tensors()):
        assert torch.equal(a, b)
    assert np.array_equal(back.init_pairs, syn.init_pairs) and back.meta == {"M": 4}


@pytest.mark.parametrize("labels", ["lowrank", "identity"])
def test_adjoint_equals_unrolled_for_every_label_mode(labels):
    student, syn, start, target, batches = tiny_setup("wbce" if labels == "lowrank" else "soft")
    syn.labels = labels
    if labels == "lowrank":
        gen = torch.Generator().manual_seed(3)
        syn.u = (0.3 * torch.randn(syn.m, 2, generator=gen)).double().requires_grad_(True)
        syn.v = (0.3 * torch.randn(syn.m, 2, generator=gen)).double().requires_grad_(True)
    assert_adjoint_equals_unrolled(student, syn, start, target, batches)
    if labels == "identity":
        assert torch.equal(syn.p(), torch.eye(syn.m, dtype=syn.p().dtype)) and syn.z.grad is None


def test_lowrank_set_round_trip_and_default_diagonal(tmp_path):
    images = torch.randint(0, 256, (50, 8, 8, 3), dtype=torch.uint8)
    syn = DistilledSet.from_real(images, torch.randn(50, 16), np.arange(50), lr=0.02, labels="lowrank", rank=3)
    rows = syn.p() / syn.p().sum(1, keepdim=True)
    assert rows.diagonal().min() > 0.89  # a = log(9(M-1)): row-normalised targets keep 0.9 on the diagonal
    assert syn.u.shape == (50, 3) and syn.label_leaves() == [syn.u, syn.v]
    syn.u += 0.5
    syn.save(str(tmp_path / "s.pt"))
    back = DistilledSet.load(str(tmp_path / "s.pt"))
    assert back.labels == "lowrank" and torch.equal(back.u, syn.u) and torch.equal(back.p(), syn.p())


def test_adjoint_equals_unrolled_with_a_preconditioner():
    student, syn, start, target, batches = tiny_setup("soft")
    scale = torch.rand(start.shape[0], generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 3
    ref = match_unrolled(student, syn, start, target, batches, scale)
    ref_grads = torch.autograd.grad(ref, syn.tensors())
    val = match_adjoint(student, syn, start, target, batches, scale)
    assert val == pytest.approx(ref.item(), rel=1e-9)
    for r, t in zip(ref_grads, syn.tensors()):
        assert r.abs().max() > 0 and torch.allclose(t.grad, r, rtol=1e-6, atol=1e-10 * r.abs().max().item())
    plain = match_unrolled(student, syn, start, target, batches)
    assert plain.item() != pytest.approx(ref.item(), rel=1e-6)  # the scaling does change the steps
