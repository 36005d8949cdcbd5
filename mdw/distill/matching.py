"""Trajectory matching (METHOD §5): a student starts at an expert's θ*_s, takes N steps on the
distilled set, and is pulled towards θ*_{s+K}:
    θ̂_n = θ̂_{n−1} − α ⊙ ∇ℓ_P(θ̂_{n−1}; Ṽ_b, T̃_b, P̃_bb),   L_TM = ‖θ̂_N − θ*_{s+K}‖² / ‖θ*_s − θ*_{s+K}‖².

`match_unrolled` keeps the whole unrolled graph (MTT, Cazenavette et al. 2022): memory grows with N.
`match_adjoint` gives the same gradients with the memory of one step's graph: a forward unroll
without graph (keeping only the N parameter vectors), then a reverse sweep that rebuilds one step
at a time and carries λ = ∂L/∂θ̂_n backwards (λ_{n−1} = λ_n − Hᵀ(α⊙λ_n)); exact, like TESLA's
constant-memory gradient, including the second-order terms.

Speed (docs/benchmarks/distill_speed.md): each step differentiates with respect to one leaf per
parameter tensor (views of the flat θ̂_n), not the flat vector, so no gradient is concatenated
inside the graph; the Hessian-vector product is a vector-Jacobian product of ∇ℓ with α⊙λ as its
output gradient (no ∇ℓ·(α⊙λ) graph); the forward unroll sees the distilled tensors detached; the
flat vectors are written into buffers reused for the whole sweep. These give the same floats as
the plain formulation. On the CPU (`fast`) the reverse sweep also differentiates convolutions and
GroupNorm twice in closed form (mdw/distill/second_order.py) and the unroll's last step keeps its
graph for the sweep's first: L_TM and every θ̂_n stay the same floats, the gradients move by float
rounding (~1e-7 relative; tests/test_second_order.py).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.func import functional_call

from .second_order import fast_second_order, twice_differentiable_attention
from .synset import GROUPS, DistilledSet, param_group
from ..train.losses import loss_function


class Student:
    """An MDWModel evaluated functionally at a flat parameter vector θ (BatchNorm in batch mode)."""

    def __init__(self, model, loss: str = "soft"):
        self.model = model.train()
        self.names = [n for n, _ in model.trainable_parameters()]
        self.sizes = [p.numel() for _, p in model.trainable_parameters()]
        self.shapes = [p.shape for _, p in model.trainable_parameters()]
        self.group_of = torch.tensor([GROUPS.index(param_group(n)) for n in self.names]).repeat_interleave(
            torch.tensor(self.sizes))
        self.loss_fn = loss_function(loss)

    def alpha_vector(self, log_alpha: torch.Tensor) -> torch.Tensor:
        return log_alpha.exp()[self.group_of.to(log_alpha.device)]

    def loss(self, theta: torch.Tensor, syn: DistilledSet, b: torch.Tensor) -> torch.Tensor:
        return self.loss_at(self.unflatten(theta), syn.images[b], syn.text[b], syn.p()[b][:, b])

    def unflatten(self, theta: torch.Tensor) -> list:
        """θ as one view per parameter tensor (differentiable w.r.t. θ)."""
        return [v.view(s) for v, s in zip(theta.split(self.sizes), self.shapes)]

    def leaves(self, theta: torch.Tensor) -> list:
        """θ as one leaf per parameter tensor that requires grad, sharing θ's memory."""
        return [v.view(s).detach().requires_grad_(True) for v, s in zip(theta.split(self.sizes), self.shapes)]

    def loss_at(self, params: list, images: torch.Tensor, text: torch.Tensor, targets: torch.Tensor,
                fast: bool = False) -> torch.Tensor:
        """ℓ_P at the parameters `params` (in `names` order) on a batch (images, g0 text, P̃_bb);
        fast: convolutions and GroupNorm with the closed-form second derivative (second_order.py).
        Attention (ViT towers) always runs its math kernel: every step is differentiated twice."""
        buffers = {n: t.clone() for n, t in self.model.named_buffers()}  # batch-mode BN; stats not kept
        with fast_second_order(fast), twice_differentiable_attention():
            img, txt, scale = functional_call(self.model, {**dict(zip(self.names, params)), **buffers}, (images, text))
        z = scale * img @ txt.t()
        return self.loss_fn(z, targets)

    def flatten_into(self, parts, out: torch.Tensor) -> torch.Tensor:
        """Per-parameter tensors (None: zeros) written into the flat `out`."""
        if all(g is not None for g in parts):
            return torch.cat([g.detach().reshape(-1) for g in parts], out=out)
        for o, g in zip(out.split(self.sizes), parts):
            if g is None:
                o.zero_()
            else:
                o.copy_(g.detach().reshape(-1))
        return out


def _normalised_distance(theta_n, start, target) -> torch.Tensor:
    return ((theta_n - target) ** 2).sum() / ((start - target) ** 2).sum().clamp_min(1e-12)


def match_unrolled(student: Student, syn: DistilledSet, start, target, batches, scale=None) -> torch.Tensor:
    """L_TM with the full graph (reference); call .backward() on it. `scale`: an optional fixed
    diagonal preconditioner of the student steps (θ̂_n = θ̂_{n−1} − α ⊙ scale ⊙ ∇ℓ)."""
    alpha = student.alpha_vector(syn.log_alpha) * (1 if scale is None else scale)
    theta = start.clone().requires_grad_(True)
    for b in batches:
        g = torch.autograd.grad(student.loss(theta, syn, b), theta, create_graph=True)[0]
        theta = theta - alpha * g
    return _normalised_distance(theta, start, target)


def _student_grad(student: Student, theta, images, text, targets, fast: bool, graph: bool) -> tuple:
    """(leaves, ∇ℓ per parameter tensor) at θ on one batch; graph: keep it for a second derivative."""
    params = student.leaves(theta)
    g = torch.autograd.grad(student.loss_at(params, images, text, targets, fast), params, create_graph=graph,
                            allow_unused=True)
    return params, g


def match_adjoint(student: Student, syn: DistilledSet, start, target, batches, scale=None,
                  fast: Optional[bool] = None) -> float:
    """L_TM; accumulates ∂L_TM/∂(Ṽ, T̃, Z, log α) into their .grad with one step's graph at a time.
    fast: the reverse sweep's convolutions and GroupNorm use the closed-form second derivative
    (mdw/distill/second_order.py), and the forward unroll's last step keeps its graph for the
    sweep's first (its ∇ℓ is then PyTorch's fused first derivative, as without a graph); False:
    PyTorch's own second derivatives, every step rebuilt (the plain formulation, e.g. to compare);
    None: fast on the CPU, where it was measured (docs/benchmarks/distill_speed.md)."""
    if fast is None:
        fast = start.device.type == "cpu"
    alpha = (student.alpha_vector(syn.log_alpha) * (1 if scale is None else scale)).detach()
    flat = torch.empty_like(alpha)                            # ∇ℓ or Hᵀ(α⊙λ), flat; reused
    work = torch.empty_like(alpha)                            # α⊙∇ℓ, α⊙λ, ∇ℓ⊙λ; reused
    thetas = [start.detach()]
    with torch.no_grad():
        images, text, p = syn.images.detach(), syn.text.detach(), syn.p().detach()
    kept = None
    for n, b in enumerate(batches):                           # forward: no graph kept (but the last, if fast)
        if fast and n == len(batches) - 1:
            kept = _student_grad(student, thetas[-1], syn.images[b], syn.text[b], syn.p()[b][:, b], True, True)
            g = kept[1]
        else:
            g = _student_grad(student, thetas[-1], images[b], text[b], p[b][:, b], False, False)[1]
        student.flatten_into(g, flat)
        thetas.append(torch.sub(thetas[-1], torch.mul(alpha, flat, out=work)))
    denom = ((start - target) ** 2).sum().clamp_min(1e-12)
    diff = thetas[-1] - target
    loss = float((diff ** 2).sum() / denom)
    lam = 2 * diff / denom                                    # ∂L/∂θ̂_N
    del diff
    grad_alpha = torch.zeros_like(alpha)
    leaves = [syn.images, syn.text] + syn.label_leaves()
    for n in range(len(batches) - 1, -1, -1):                 # reverse sweep
        b = batches[n]
        params, g = kept or _student_grad(student, thetas[n], syn.images[b], syn.text[b], syn.p()[b][:, b], fast, True)
        kept = None
        torch.mul(alpha, lam, out=work)                       # α⊙λ_n: the output gradient of ∇ℓ
        outs = [(gi, w.view(s)) for gi, w, s in zip(g, work.split(student.sizes), student.shapes)
                if gi is not None and gi.requires_grad]
        grads = torch.autograd.grad([o for o, _ in outs], params + leaves, grad_outputs=[w for _, w in outs],
                                    allow_unused=True)
        student.flatten_into(g, flat)
        grad_alpha -= torch.mul(flat, lam, out=work)          # θ̂_n = θ̂_{n−1} − α g  ⇒  ∂L/∂α −= g λ_n
        for leaf, gr in zip(leaves, grads[len(params):]):
            if gr is not None:
                leaf.grad = -gr if leaf.grad is None else leaf.grad - gr
        lam -= student.flatten_into(grads[:len(params)], flat)
    per_group = torch.zeros_like(syn.log_alpha).index_add_(0, student.group_of.to(alpha.device), grad_alpha * alpha)
    syn.log_alpha.grad = per_group if syn.log_alpha.grad is None else syn.log_alpha.grad + per_group
    return loss
