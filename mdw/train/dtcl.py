"""Expert training: DTCL's two collaborating tracks (METHOD §2), or one plain InfoNCE track.

Each epoch every track trains on the noisy pairs; then a no-grad pass gives each pair's
symmetric InfoNCE loss under each track, a two-component GMM per track turns losses into clean
probabilities w, and the next epoch's track A trains on B's split (and B on A's):
    L = Σ w_n^partner InfoNCE_n / Σ w_n^partner + λ_c · L_comp
The first `warmup_epochs` use the complementary loss L_comp alone (`warmup_loss="comp"`) or
the whole loss with every pair trusted (w = 1, `"full"`). With `dtcl=False` the same
loop trains one track with plain InfoNCE, so every baseline shares this code path.
The trainable parameters of every track are kept after each epoch (the trajectory buffer, §3).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from ..config import ExpertConfig, ModelConfig
from ..evaluate.detection import detection_metrics
from ..evaluate.retrieval import recall_at_k
from ..models.model import MDWModel
from ..models.presets import build_model
from .data import PairTensors, RetrievalSplit, embed_split
from .finite import check_finite, lower_lr_hint
from .gmm import LossGMM
from .losses import complementary, infonce, infonce_per_pair, weighted_infonce

TRACK_NAMES = ("A", "B")


@dataclass
class Track:
    name: str
    model: MDWModel
    opt: torch.optim.Optimizer
    gen: torch.Generator                      # shuffles this track's batches
    buffer: list = field(default_factory=list)  # flat trainable parameters after each kept epoch
    precond: list = field(default_factory=list)  # Adam's diagonal preconditioner after each kept epoch
    gmm: Optional[LossGMM] = None             # the last epoch's loss mixture


@dataclass
class ExpertsResult:
    kind: str                                 # "dtcl" | "plain"
    tracks: list
    scores: dict                              # name -> (epochs, N) arrays; see EPOCH_ARRAYS
    history: list                             # per-epoch metrics (what events.jsonl gets)
    pair_ids: np.ndarray
    is_noisy: Optional[np.ndarray]


EPOCH_ARRAYS = ("wA", "wB", "consensus", "lossA", "lossB", "simA", "simB", "flag")


def autocast_for(device: torch.device, mode: str):
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


@torch.no_grad()
def adam_preconditioner(opt: torch.optim.Optimizer, model: MDWModel) -> torch.Tensor:
    """1 / (sqrt(v̂) + eps) per trainable parameter, flat in flat_params order: the diagonal scaling
    Adam applied to the gradient at the end of this epoch (0 where it holds no state). Students in
    trajectory matching step along it, so their moves can line up with an Adam expert's (ours)."""
    group = opt.param_groups[0]
    beta2, eps = group["betas"][1], group["eps"]
    parts = []
    for _, p in model.trainable_parameters():
        st = opt.state.get(p, {})
        if "exp_avg_sq" not in st:
            parts.append(torch.zeros(p.numel()))
            continue
        bias2 = 1 - beta2 ** float(st["step"])
        parts.append((1.0 / ((st["exp_avg_sq"] / bias2).sqrt() + eps)).flatten().float().cpu())
    return torch.cat(parts)


def make_tracks(n: int, model_cfg: ModelConfig, image_size: int, cfg: ExpertConfig, seed: int) -> list:
    tracks = []
    for k in range(n):
        model = build_model(model_cfg, image_size, seed=seed + 1000 * k)
        params = [p for _, p in model.trainable_parameters()]
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(seed + 1000 * k + 1)
        tracks.append(Track(TRACK_NAMES[k], model, opt, gen, [model.flat_params()]))
    return tracks


def expert_hint(cfg: ExpertConfig) -> str:
    return lower_lr_hint(("experts.lr", cfg.lr)) + (f", or clip the gradient (experts.grad_clip now {cfg.grad_clip:g})"
                                                   if cfg.grad_clip > 0 else ", or set experts.grad_clip=1")


def train_one_epoch(t: Track, pairs: PairTensors, cfg: ExpertConfig, mode: str,
                    weights: Optional[torch.Tensor], amp, tick: Callable[[float], None], where: str = "") -> float:
    """One pass over the pairs; mode: comp (warm-up) | infonce (plain) | dtcl. Mean batch loss.
    `where` (e.g. "epoch 2") names the place in a DivergenceError when a loss or parameter stops
    being finite. Raises: DivergenceError."""
    model, dev = t.model, t.model.device
    model.train()
    perm = torch.randperm(len(pairs), generator=t.gen)
    starts = range(0, len(pairs) - 1, cfg.batch_size)
    total = 0.0
    for b, s in enumerate(starts):
        idx = perm[s:s + cfg.batch_size]
        if len(idx) < 2:
            break
        x, g = pairs.batch(idx, dev)
        with amp():
            z = model.logits(x, g)
        z = z.float()
        if mode == "comp":
            loss = complementary(z)
        elif mode == "infonce":
            loss = infonce(z)
        else:
            loss = weighted_infonce(z, weights[idx].to(dev)) + cfg.lambda_c * complementary(z)
        t.opt.zero_grad(set_to_none=True)
        value = loss.item()
        check_finite(value, "experts", f"{where}, track {t.name}, batch {b + 1}", "the training loss", expert_hint(cfg))
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(t.opt.param_groups[0]["params"], cfg.grad_clip)
        t.opt.step()
        total += value
        tick((b + 1) / len(starts))
    check_finite([p for _, p in model.trainable_parameters()], "experts", f"{where}, track {t.name} (end of epoch)",
                 "a model parameter", expert_hint(cfg))
    return total / max(len(starts), 1)


def equal_batches(n: int, batch_size: int, seed: int) -> list:
    """A fixed random cover of range(n) by batches of exactly min(batch_size, n) positions, so every
    pair's InfoNCE sees the same number of negatives (a loss of log B differs with B). The n mod B
    pairs left over form the last batch with B − r pairs already scored (`(idx, new)`: `new` is
    how many of idx, counted from its end, get their loss from this batch)."""
    b = max(1, min(batch_size, n))
    perm = np.random.default_rng(seed).permutation(n)
    out = [(perm[s:s + b], b) for s in range(0, n - n % b, b)]
    if n % b:
        out.append((perm[n - b:], n % b))
    return out


@torch.no_grad()
def per_pair_losses(model: MDWModel, pairs: PairTensors, batch_size: int, seed: int, amp) -> tuple:
    """(loss, similarity) of every pair, each (N,) float32: symmetric InfoNCE against the other
    pairs of its batch (equal_batches: every batch holds min(batch_size, N) pairs), in eval mode."""
    model.eval()
    n = len(pairs)
    loss, sim = np.zeros(n, np.float32), np.zeros(n, np.float32)
    for idx, new in equal_batches(n, batch_size, seed):
        x, g = pairs.batch(torch.from_numpy(idx), model.device)
        with amp():
            img, txt, scale = model(x, g)
        z = (scale * img @ txt.t()).float()
        mine = idx[len(idx) - new:]
        loss[mine] = infonce_per_pair(z).cpu().numpy()[len(idx) - new:]
        sim[mine] = (img.float() * txt.float()).sum(1).cpu().numpy()[len(idx) - new:]
    return loss, sim


def train_experts(pairs: PairTensors, test: Optional[RetrievalSplit], cfg: ExpertConfig, model_cfg: ModelConfig,
                  image_size: int, seed: int = 0, progress: Optional[Callable[[float, str], None]] = None,
                  on_epoch: Optional[Callable[[int, dict], None]] = None) -> ExpertsResult:
    """Train DTCL (two tracks) or the plain expert (one track); see the module docstring."""
    say = progress or (lambda frac, msg="": None)
    kind = "dtcl" if cfg.dtcl else "plain"
    tracks = make_tracks(2 if cfg.dtcl else 1, model_cfg, image_size, cfg, seed)
    amp = autocast_for(tracks[0].model.device, cfg.autocast)
    keep = cfg.buffer_epochs or cfg.epochs
    w: list = [None] * len(tracks)
    scores = {k: [] for k in EPOCH_ARRAYS}
    history = []
    for epoch in range(cfg.epochs):
        metrics: dict = {"epoch": epoch + 1}
        for k, t in enumerate(tracks):
            if not cfg.dtcl:
                mode, weights = "infonce", None
            elif epoch < cfg.warmup_epochs and cfg.warmup_loss == "comp":
                mode, weights = "comp", None
            elif epoch < cfg.warmup_epochs:                    # "full": every pair trusted
                mode, weights = "dtcl", torch.ones(len(pairs))
            else:
                mode, weights = "dtcl", torch.from_numpy(w[1 - k])
                if cfg.weighting == "hard":
                    weights = (weights > 0.5).float()
            base = (epoch + k / len(tracks)) / cfg.epochs
            tick = lambda f, base=base, t=t: say(base + f / len(tracks) / cfg.epochs,
                                                 f"epoch {epoch + 1}/{cfg.epochs}, track {t.name}")
            metrics[f"train_loss_{t.name}"] = train_one_epoch(t, pairs, cfg, mode, weights, amp, tick,
                                                              f"epoch {epoch + 1}")
            metrics[f"mode_{t.name}"] = mode
        _score_epoch(tracks, pairs, cfg, epoch, amp, w, scores, metrics)
        last = epoch == cfg.epochs - 1
        if test is not None and ((epoch + 1) % max(cfg.eval_every, 1) == 0 or last):
            for t in tracks:
                r = recall_at_k(*embed_split(t.model, test), test.caption_image)
                metrics.update({f"{m}_{t.name}": r[m] for m in ("IR@1", "TR@1", "IR@5", "TR@5", "mean_recall")})
        if epoch + 1 <= keep:
            for t in tracks:
                t.buffer.append(t.model.flat_params())
                if isinstance(t.opt, torch.optim.Adam):
                    t.precond.append(adam_preconditioner(t.opt, t.model))
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics)
    arrays = {k: np.stack(v) for k, v in scores.items() if v}
    return ExpertsResult(kind, tracks, arrays, history, pairs.pair_ids, pairs.is_noisy)


def _score_epoch(tracks, pairs, cfg, epoch, amp, w, scores, metrics) -> None:
    """The no-grad pass: per-pair losses → GMM → clean probabilities; consensus, flags, detection."""
    for k, t in enumerate(tracks):
        loss, sim = per_pair_losses(t.model, pairs, cfg.batch_size, seed=epoch, amp=amp)
        check_finite(loss, "experts", f"epoch {epoch + 1}, track {t.name} (scoring pass)", "a per-pair loss",
                     expert_hint(cfg))
        t.gmm = LossGMM.fit(loss)
        if not t.gmm.split:
            metrics[f"no_split_{t.name}"] = t.gmm.reason
            metrics["warning"] = "; ".join(filter(None, [metrics.get("warning"), f"no noise split this epoch: "
                                                         f"track {t.name}: {t.gmm.reason}; every pair is trusted"]))
        w[k] = t.gmm.posterior(loss).astype(np.float32)
        scores[f"loss{t.name}"].append(loss)
        scores[f"sim{t.name}"].append(sim)
        scores[f"w{t.name}"].append(w[k])
    consensus = np.mean(np.stack(w), axis=0).astype(np.float32)
    scores["consensus"].append(consensus)
    scores["flag"].append((consensus < cfg.flag_threshold).astype(np.uint8))
    metrics["flagged"] = int((consensus < cfg.flag_threshold).sum())
    if pairs.is_noisy is not None and 0 < pairs.is_noisy.sum() < len(pairs):
        d = detection_metrics(consensus, pairs.is_noisy, cfg.flag_threshold)
        metrics.update({"auc": d["auc"], "precision": d["precision"], "recall": d["recall"]})
        metrics["auc_similarity"] = detection_metrics(scores["simA"][-1], pairs.is_noisy)["auc"]
