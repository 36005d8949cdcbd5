"""Trajectory matching (METHOD §5): a student starts at an expert's θ*_s, takes N steps on the
distilled set, and is pulled towards θ*_{s+K}:
    θ̂_n = θ̂_{n−1} − α ⊙ ∇ℓ_P(θ̂_{n−1}; Ṽ_b, T̃_b, P̃_bb),   L_TM = ‖θ̂_N − θ*_{s+K}‖² / ‖θ*_s − θ*_{s+K}‖².

`match_unrolled` keeps the whole unrolled graph (MTT, Cazenavette et al. 2022): memory grows with N.
`match_adjoint` gives the same gradients with the memory of one step's graph: a forward unroll
without graph (keeping only the N parameter vectors), then a reverse sweep that rebuilds one step
at a time and carries λ = ∂L/∂θ̂_n backwards (λ_{n−1} = λ_n − Hᵀ(α⊙λ_n)); exact, like TESLA's
constant-memory gradient, including the second-order terms.
"""
from __future__ import annotations

import torch
from torch.func import functional_call

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
        params = {n: v.view(s) for n, v, s in zip(self.names, theta.split(self.sizes), self.shapes)}
        buffers = {n: t.clone() for n, t in self.model.named_buffers()}  # batch-mode BN; stats not kept
        img, txt, scale = functional_call(self.model, {**params, **buffers}, (syn.images[b], syn.text[b]))
        z = scale * img @ txt.t()
        return self.loss_fn(z, syn.p()[b][:, b])


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


def match_adjoint(student: Student, syn: DistilledSet, start, target, batches, scale=None) -> float:
    """L_TM; accumulates ∂L_TM/∂(Ṽ, T̃, Z, log α) into their .grad with one step's graph at a time."""
    alpha = (student.alpha_vector(syn.log_alpha) * (1 if scale is None else scale)).detach()
    thetas = [start.detach()]
    for b in batches:                                         # forward: no graph kept
        theta = thetas[-1].clone().requires_grad_(True)
        g = torch.autograd.grad(student.loss(theta, syn, b), theta)[0]
        thetas.append((theta - alpha * g).detach())
    denom = ((start - target) ** 2).sum().clamp_min(1e-12)
    loss = float(((thetas[-1] - target) ** 2).sum() / denom)
    lam = 2 * (thetas[-1] - target) / denom                   # ∂L/∂θ̂_N
    grad_alpha = torch.zeros_like(alpha)
    leaves = [syn.images, syn.text] + syn.label_leaves()
    for n in range(len(batches) - 1, -1, -1):                 # reverse sweep
        theta = thetas[n].clone().requires_grad_(True)
        g = torch.autograd.grad(student.loss(theta, syn, batches[n]), theta, create_graph=True)[0]
        grads = torch.autograd.grad((g * (alpha * lam)).sum(), [theta] + leaves, allow_unused=True)
        grad_alpha -= g.detach() * lam                        # θ̂_n = θ̂_{n−1} − α g  ⇒  ∂L/∂α −= g λ_n
        for leaf, gr in zip(leaves, grads[1:]):
            if gr is not None:
                leaf.grad = -gr if leaf.grad is None else leaf.grad - gr
        lam = lam - grads[0]
    per_group = torch.zeros_like(syn.log_alpha).index_add_(0, student.group_of.to(alpha.device), grad_alpha * alpha)
    syn.log_alpha.grad = per_group if syn.log_alpha.grad is None else syn.log_alpha.grad + per_group
    return loss
