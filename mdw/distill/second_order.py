"""Convolution and GroupNorm with a cheaper second derivative, for the matching's reverse sweep.

`match_adjoint` differentiates each student step twice: ∇ℓ with a graph, then the vector-Jacobian
product of ∇ℓ with α⊙λ (mdw/distill/matching.py). PyTorch's own second derivatives of these two
layers are general formulas run op by op:
- GroupNorm: under create_graph its backward is rebuilt from ~20 elementwise ops on full-size
  maps, and their backward again (the stem's 32x32 maps alone: up to ~12 ms of a ~100 ms student
  step at M = 20 on one CPU thread);
- convolution: the weight term ∂/∂W of ∇_x is a convolution of the batch-transposed maps (batch
  as channels, stride as dilation), which oneDNN runs at a fraction of its usual speed.
Here `fast_second_order()` (used by `match_adjoint` on the CPU, where it was measured: ~12% of an
iteration at M = 20, docs/benchmarks/distill_speed.md) routes F.conv2d and F.group_norm, while it
is active, through autograd Functions whose first derivative is PyTorch's own fused kernel (the same call, so ∇ℓ is
the same float as in the forward unroll) and whose second derivative is a closed form: for
GroupNorm a few per-channel sums and two fused passes (derivation in `_GroupNormGrad.backward`);
for a convolution the same three terms as PyTorch, the weight term by the ordinary weight-gradient
kernel (`convolution_backward`). Same mathematics, different float rounding (about 1e-7 relative
in float32); tests/test_second_order.py checks both against PyTorch's autograd in float64.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode


def _pair(v) -> list:
    return [int(v[0]), int(v[1])] if isinstance(v, (tuple, list)) else [int(v), int(v)]


# -- convolution ---------------------------------------------------------------------------------
class _Conv2dGrad(torch.autograd.Function):
    """(gO, x, W) -> (∂x, ∂W, ∂b) by `convolution_backward`; its own backward in closed form."""

    @staticmethod
    def forward(ctx, grad_out, x, weight, has_bias, stride, padding, dilation, groups, mask):
        bias_sizes = [weight.shape[0]] if has_bias else None
        gx, gw, gb = torch.ops.aten.convolution_backward(grad_out, x, weight, bias_sizes, stride, padding, dilation,
                                                         False, [0, 0], groups, mask)
        ctx.save_for_backward(grad_out, x, weight)
        ctx.conv = (stride, padding, dilation, groups)
        return gx, gw, gb

    @staticmethod
    @once_differentiable
    def backward(ctx, ggx, ggw, ggb):
        grad_out, x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        need_go, need_x, need_w = ctx.needs_input_grad[:3]
        r_go = r_x = r_w = None
        if need_go:                       # ∂/∂gO = conv(ggx, W) + conv(x, ggW) + ggb
            if ggx is not None:
                r_go = F.conv2d(ggx, weight, None, stride, padding, dilation, groups)
            if ggw is not None:
                t = F.conv2d(x, ggw, None, stride, padding, dilation, groups)
                r_go = t if r_go is None else r_go + t
            if ggb is not None:
                t = ggb.view(1, -1, 1, 1).expand_as(grad_out)
                r_go = t if r_go is None else r_go + t
        if need_w and ggx is not None:    # ∂/∂W: the weight gradient of a conv of ggx, output gradient gO
            r_w = torch.ops.aten.convolution_backward(grad_out, ggx, weight, None, stride, padding, dilation, False,
                                                      [0, 0], groups, [False, True, False])[1]
        if need_x and ggw is not None:    # ∂/∂x: the input gradient of a conv by ggW, output gradient gO
            r_x = torch.ops.aten.convolution_backward(grad_out, x, ggw, None, stride, padding, dilation, False,
                                                      [0, 0], groups, [True, False, False])[0]
        return r_go, r_x, r_w, None, None, None, None, None, None


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation, groups, bias is not None)
        return torch.ops.aten.convolution(x, weight, bias, stride, padding, dilation, False, [0, 0], groups)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conv
        mask = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]), bool(ctx.needs_input_grad[2])]
        gx, gw, gb = _Conv2dGrad.apply(grad_out, x, weight, has_bias, stride, padding, dilation, groups, mask)
        return gx, gw, gb, None, None, None, None


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> torch.Tensor:
    """F.conv2d (numeric padding) with the closed-form second derivative."""
    return _Conv2d.apply(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation), int(groups))


# -- GroupNorm -----------------------------------------------------------------------------------
def _rowdot(a: torch.Tensor, b: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """(N, G, D, HW) x (N, G, D, HW) -> (N, G, D, 1): Σ_hw a·b (the product written into `scratch`)."""
    return torch.mul(a, b, out=scratch).sum(-1, keepdim=True)


class _GroupNormGrad(torch.autograd.Function):
    """(dy, x, γ) -> (∂x, ∂γ, ∂β) by PyTorch's fused kernel; its own backward in closed form."""

    @staticmethod
    def forward(ctx, dy, x, weight, mean, rstd, groups, mask):
        n, c = x.shape[:2]
        gx, gw, gb = torch.ops.aten.native_group_norm_backward(dy, x, mean, rstd, weight, n, c, x.numel() // (n * c),
                                                               groups, mask)
        ctx.save_for_backward(dy, x, weight, mean, rstd)
        ctx.groups = groups
        return gx, gw, gb

    @staticmethod
    @once_differentiable
    def backward(ctx, u, uw, ub):
        """Per group (K = D·HW entries): x̂ = (x − μ) r, ĝ = γ dy, A = mean ĝ, B = mean ĝx̂ and
            ∂x = r (ĝ − A − x̂ B),  ∂γ_c = Σ dy x̂,  ∂β_c = Σ dy     (the fused first derivative).
        For Φ = Σ u ∂x + Σ uγ ∂γ + Σ uβ ∂β, with ū = mean u and ū_x̂ = mean u x̂:
            ∂Φ/∂dy = γ W + uγ x̂ + uβ,   W = r (u − ū − x̂ ū_x̂)
            ∂Φ/∂γ_c = Σ dy W
            ∂Φ/∂x = r (G − mean G − x̂ mean Gx̂) − (r/K) Φ₁ x̂,   G = (uγ − r ū_x̂ γ) dy − r B u,
        Φ₁ = Σ_group u ∂x (x moves x̂ and r; ∂r/∂x = −r² x̂ / K). Each is an affine combination
        of u, dy and x with per-(sample, channel) coefficients, built from six per-channel sums
        (each full-size operation takes the full-size tensor first: a broadcast (N, C, 1) first
        operand makes PyTorch lay the result out along the wrong axis, ~20x slower here)."""
        dy, x, weight, mean, rstd = ctx.saved_tensors
        g = ctx.groups
        n, c = x.shape[:2]
        d = c // g
        xs, dys = x.reshape(n, g, d, -1), dy.reshape(n, g, d, -1)          # views: (N, G, D, HW)
        k = d * xs.shape[-1]
        r, mu = rstd.view(n, g, 1, 1), mean.view(n, g, 1, 1)              # per group
        gam = weight.view(1, g, d, 1) if weight is not None else x.new_ones((1, g, d, 1))
        uw = uw.view(1, g, d, 1) if uw is not None else torch.zeros_like(gam)
        ub = ub.view(1, g, d, 1) if ub is not None else torch.zeros_like(gam)
        scratch = torch.empty_like(xs)
        s_dy, s_dyx = dys.sum(-1, keepdim=True), _rowdot(dys, xs, scratch)  # per channel: (N, G, D, 1)
        us = u.reshape(n, g, d, -1) if u is not None else None
        if us is not None:
            s_u, s_ux, s_udy = us.sum(-1, keepdim=True), _rowdot(us, xs, scratch), _rowdot(us, dys, scratch)
        else:
            s_u = s_ux = s_udy = torch.zeros_like(s_dy)
        u_bar = s_u.sum(2, keepdim=True) / k                                # per group: (N, G, 1, 1)
        ux_bar = r * (s_ux - mu * s_u).sum(2, keepdim=True) / k
        a_bar = (gam * s_dy).sum(2, keepdim=True) / k
        b_bar = r * (gam * (s_dyx - mu * s_dy)).sum(2, keepdim=True) / k
        phi = r * ((gam * s_udy).sum(2, keepdim=True) - k * a_bar * u_bar - k * b_bar * ux_bar)
        g_dy = g_x = g_w = None
        if ctx.needs_input_grad[0]:
            out = torch.mul(xs, r * (uw - gam * r * ux_bar), out=scratch)   # the scratch's last use
            out = out.add_(gam * r * (r * ux_bar * mu - u_bar) - uw * r * mu + ub)
            if us is not None:
                out = out.addcmul_(us, gam * r)
            g_dy = out.view_as(dy)
        if ctx.needs_input_grad[2] and weight is not None:
            g_w = (r * s_udy - r * r * ux_bar * s_dyx + r * (r * ux_bar * mu - u_bar) * s_dy).sum(0).view(c)
        if ctx.needs_input_grad[1]:
            e_dy, e_u = uw - r * ux_bar * gam, -r * b_bar
            m_g = (e_dy * s_dy + e_u * s_u).sum(2, keepdim=True) / k
            m_gx = r * (e_dy * (s_dyx - mu * s_dy) + e_u * (s_ux - mu * s_u)).sum(2, keepdim=True) / k
            q = r * r * (m_gx + phi / k)
            out = (xs * -q).add_(q * mu - r * m_g).addcmul_(dys, r * e_dy)
            if us is not None:
                out = out.addcmul_(us, r * e_u)
            g_x = out.view_as(x)
        return g_dy, g_x, g_w, None, None, None, None


class _GroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps):
        n, c = x.shape[:2]
        y, mean, rstd = torch.native_group_norm(x, weight, bias, n, c, x.numel() // (n * c), groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups, ctx.has_bias = groups, bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        mask = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]) and weight is not None,
                bool(ctx.needs_input_grad[2]) and ctx.has_bias]
        gx, gw, gb = _GroupNormGrad.apply(dy.contiguous(), x.contiguous(), weight, mean, rstd, ctx.groups, mask)
        return (gx if mask[0] else None), (gw if mask[1] else None), (gb if mask[2] else None), None, None


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5) -> torch.Tensor:
    """F.group_norm with the closed-form second derivative."""
    return _GroupNorm.apply(x, weight, bias, int(num_groups), float(eps))


# -- routing -------------------------------------------------------------------------------------
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_GN_ARGS = ("input", "num_groups", "weight", "bias", "eps")


class _Route(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            a = {**dict(zip(_CONV_ARGS, args)), **kwargs}
            if not isinstance(a.get("padding", 0), str) and a["input"].dim() == 4:
                return conv2d(**{k: v for k, v in a.items() if k != "input"}, x=a["input"])
        elif func is F.group_norm:
            a = {**dict(zip(_GN_ARGS, args)), **kwargs}
            if a["input"].dim() >= 3:
                return group_norm(a["input"], a["num_groups"], a.get("weight"), a.get("bias"), a.get("eps", 1e-5))
        return func(*args, **kwargs)


def twice_differentiable_attention():
    """Context manager: scaled_dot_product_attention by its plain (math) kernel, whose backward is
    differentiable again; the fused CPU / CUDA kernels (flash, memory-efficient) have no second
    derivative, which the matching's reverse sweep takes through a ViT tower's attention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.MATH])


def fast_second_order(enabled: bool = True):
    """Context manager: F.conv2d and F.group_norm called inside it (2-D maps, numeric padding)
    use the Functions above; everything else runs as usual."""
    return _Route() if enabled else contextlib.nullcontext()
