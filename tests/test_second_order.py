"""The matching's fast layers: closed-form second derivatives of conv / GroupNorm equal PyTorch's
autograd (float64), the channels-last max-pool is bit-identical to nn.MaxPool2d, and the fast
adjoint matches the plain one (and the unrolled reference) to float rounding."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mdw.distill.matching import match_adjoint, match_unrolled
from mdw.distill.second_order import conv2d, fast_second_order, group_norm
from mdw.models.towers import MaxPool2d

from helpers import tiny_setup


def _first_and_second(fn, inputs, seed=0):
    """First-order grads of a nonlinear scalar of fn(*inputs), and the grads of a scalar of those."""
    y = fn(*inputs)
    w = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(seed))
    g = torch.autograd.grad((w * y).sum() + 0.3 * (y * y * w).sum(), inputs, create_graph=True)
    tot = sum((gi * torch.cos(torch.arange(gi.numel(), dtype=gi.dtype).view_as(gi))).sum() for gi in g)
    return g, torch.autograd.grad(tot, inputs, allow_unused=True)


def _close(a, b):
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.allclose(x, y, rtol=1e-10, atol=1e-12 * max(y.abs().max().item(), 1.0))


@pytest.mark.parametrize("n,c,h,groups,affine", [(3, 8, 4, 2, True), (2, 6, 3, 3, True), (4, 4, 2, 4, False),
                                                  (2, 8, 5, 1, True)])
def test_group_norm_second_derivative_equals_autograd(n, c, h, groups, affine):
    gen = torch.Generator().manual_seed(n * 100 + c)
    x = (2 * torch.randn(n, c, h, h, generator=gen, dtype=torch.float64) + 1.5).requires_grad_(True)
    params = [torch.randn(c, generator=gen, dtype=torch.float64).requires_grad_(True) for _ in range(2)] if affine else []
    wb = params if affine else [None, None]
    ref = _first_and_second(lambda t, *p: F.group_norm(t, groups, *wb), [x] + params)
    ours = _first_and_second(lambda t, *p: group_norm(t, groups, *wb), [x] + params)
    _close(ours[0], ref[0])
    _close(ours[1], ref[1])
    ggx = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t, a, b: group_norm(t, 2, a, b), (
        ggx, torch.randn(4, dtype=torch.float64, requires_grad=True), torch.randn(4, dtype=torch.float64, requires_grad=True)))


@pytest.mark.parametrize("stride,padding,dilation,groups,bias", [(1, 1, 1, 1, False), (2, 1, 1, 1, True),
                                                                 (2, 0, 1, 2, False), (1, 2, 2, 1, True)])
def test_conv_second_derivative_equals_autograd(stride, padding, dilation, groups, bias):
    gen = torch.Generator().manual_seed(stride * 10 + padding)
    x = torch.randn(3, 4, 9, 9, generator=gen, dtype=torch.float64).requires_grad_(True)
    w = torch.randn(6, 4 // groups, 3, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    params = [x, w] + ([torch.randn(6, generator=gen, dtype=torch.float64).requires_grad_(True)] if bias else [])
    args = (stride, padding, dilation, groups)
    ref = _first_and_second(lambda a, b, *c: torch.tanh(F.conv2d(a, b, c[0] if c else None, *args)), params)
    ours = _first_and_second(lambda a, b, *c: torch.tanh(conv2d(a, b, c[0] if c else None, *args)), params)
    _close(ours[0], ref[0])
    _close(ours[1], ref[1])


def test_the_route_covers_module_calls_and_leaves_the_rest():
    conv, gn = nn.Conv2d(3, 4, 3, padding=1).double(), nn.GroupNorm(2, 4).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with fast_second_order():
        y = gn(conv(x))
        same = F.conv2d(x, conv.weight, padding="same")          # string padding: PyTorch's own
    assert type(y.grad_fn).__name__ == "_GroupNormBackward" and "_Conv2d" in type(y.grad_fn.next_functions[0][0]).__name__
    assert "_Conv2d" not in type(same.grad_fn).__name__
    assert torch.allclose(y, gn(conv(x)), rtol=0, atol=1e-12)
    with fast_second_order(False):
        assert "_GroupNorm" not in type(gn(conv(x)).grad_fn).__name__


def test_channels_last_max_pool_is_bit_identical():
    for shape in [(20, 32, 32, 32), (3, 5, 9, 7)]:
        x = torch.relu(torch.randn(*shape, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
        scale = torch.rand(shape[1], generator=torch.Generator().manual_seed(2)).requires_grad_(True)
        outs = []
        for pool in (nn.MaxPool2d(3, 2, 1), MaxPool2d(3, 2, 1)):
            y = pool(x * scale.view(1, -1, 1, 1))
            g = torch.autograd.grad((y * y).sum(), [x, scale], create_graph=True)
            outs.append([y, *g, *torch.autograd.grad(sum((t * t.detach().sin()).sum() for t in g), [x, scale])])
        assert all(torch.equal(a, b) for a, b in zip(*outs))
    assert torch.autograd.gradgradcheck(MaxPool2d(3, 2, 1), (torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("labels", ["soft", "lowrank"])
def test_fast_adjoint_equals_the_plain_adjoint_and_the_unrolled_reference(labels):
    student, syn, start, target, batches = tiny_setup("wbce" if labels == "lowrank" else "soft")
    if labels == "lowrank":
        gen = torch.Generator().manual_seed(3)
        syn.labels = "lowrank"
        syn.u = (0.3 * torch.randn(syn.m, 2, generator=gen)).double().requires_grad_(True)
        syn.v = (0.3 * torch.randn(syn.m, 2, generator=gen)).double().requires_grad_(True)
    leaves = [syn.images, syn.text, syn.log_alpha] + syn.label_leaves()
    ref = match_unrolled(student, syn, start, target, batches)       # PyTorch's own autograd throughout
    ref_grads = torch.autograd.grad(ref, leaves)
    results = {}
    for fast in (True, False):
        for t in leaves:
            t.grad = None
        results[fast] = (match_adjoint(student, syn, start, target, batches, fast=fast), [t.grad.clone() for t in leaves])
    assert results[True][0] == results[False][0] == pytest.approx(ref.item(), rel=1e-9)   # the unroll: the same floats
    for r, a, b in zip(ref_grads, results[True][1], results[False][1]):
        assert r.abs().max() > 0
        assert torch.allclose(a, r, rtol=1e-6, atol=1e-10 * r.abs().max().item())
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12 * r.abs().max().item())


def test_fast_adjoint_in_float32_is_within_rounding_of_the_plain_one():
    student, syn, start, target, batches = tiny_setup("soft")
    student.model.float()
    for name in ("images", "text", "z", "log_alpha"):
        setattr(syn, name, getattr(syn, name).detach().float().requires_grad_(True))
    start, target = start.float(), target.float()
    out = {}
    for fast in (True, False):
        for t in syn.tensors():
            t.grad = None
        out[fast] = (match_adjoint(student, syn, start, target, batches, fast=fast), [t.grad.clone() for t in syn.tensors()])
    assert out[True][0] == out[False][0]                 # the forward unroll is bit-identical
    for a, b in zip(out[True][1], out[False][1]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())
    assert np.isfinite(out[True][0])
