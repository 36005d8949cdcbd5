"""Trainable image towers and the pixel normalisation in front of them.

Images enter every MDW model as float tensors in [0, 1], shape (B, 3, S, S) (made from the uint8
image caches, or the distilled pixels Ṽ). `Normalize` (mean/std, buffers, not trained) is applied
inside `MDWModel`, so callers never normalise themselves and the gradient w.r.t. raw pixels is what
distillation optimises.

A tower exposes `forward(x) -> (B, D)`, `forward_features(x) -> (B, C, h, w)` (the last spatial
feature map, used by Grad-CAM for CEO masks and the region-word heatmaps) and
`forward_with_features(x) -> (embedding, map)` where the embedding is computed from that map, so
a Grad-CAM gradient taken w.r.t. the map is the gradient of the embedding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# The OpenAI CLIP statistics (open_clip.OPENAI_DATASET_MEAN/STD); a from-scratch tower does not
# care which statistics it gets as long as they never change, so one pair is used everywhere.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Normalize(nn.Module):
    """(x - mean) / std per channel, for inputs in [0, 1]; optionally resizes to a fixed size."""

    def __init__(self, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
                 size: int = 0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.size = int(size)  # 0: keep the input size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class _ChannelsLastMaxPool(torch.autograd.Function):
    """max_pool2d of an NCHW CPU map computed by the channels-last kernel; NCHW output and gradients."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        y, idx = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last), kernel_size,
                                                        stride, padding, dilation, ceil_mode)
        idx = idx.contiguous()
        ctx.save_for_backward(x, idx)
        ctx.args = (kernel_size, stride, padding, dilation, ceil_mode)
        return y.contiguous()

    @staticmethod
    def backward(ctx, grad):
        x, idx = ctx.saved_tensors
        # the op PyTorch's own max-pool backward calls, with the same indices: differentiable again
        return (torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, *ctx.args, idx),
                None, None, None, None, None)


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d that pools an NCHW CPU map with PyTorch's channels-last kernel.

    The NCHW max-pool kernel on the CPU is not vectorised; the channels-last one is (over channels):
    on the cpu-small stem (32 channels, 32x32) it is about 4x faster with the layout conversions,
    which a student step pays twice (forward, and its second-order sweep). Both kernels scan each
    window in the same order and keep its first maximum, so the output and the argmax indices are
    the same; the backward is PyTorch's own (`max_pool2d_with_indices_backward` on those indices,
    in NCHW), so every gradient, first and second order, is the same float too.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dim() != 4 or self.return_indices
                or x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        pair = nn.modules.utils._pair
        stride = self.stride if self.stride is not None else self.kernel_size
        return _ChannelsLastMaxPool.apply(x, pair(self.kernel_size), pair(stride), pair(self.padding),
                                          pair(self.dilation), self.ceil_mode)


@dataclass
class ResNetConfig:
    """A small ResNet of BasicBlocks (He et al. 2016), sized for 32-224 px inputs.

    Total stride = stem_stride * 2**(len(channels)-2) * last_stride: with the defaults (stem
    stride 2, four stages) a 64 px input gives a 4x4 last map, 128 px gives 8x8.
    """
    channels: tuple = (32, 64, 128, 256)   # per stage; stage i>0 halves the resolution
    blocks: tuple = (1, 1, 1, 1)           # BasicBlocks per stage
    stem_stride: int = 2                   # 1 keeps the input resolution in stage 1 (slower); 4 adds a max-pool
    last_stride: int = 2                   # stride of the last stage: 1 keeps a finer last map for Grad-CAM
    norm: str = "batch"                    # batch | group (8 groups) | none
    embed_dim: int = 256

    def validate(self) -> None:
        if len(self.channels) != len(self.blocks) or not self.channels:
            raise ValueError("ResNetConfig: channels and blocks need the same, non-zero length")
        if self.norm not in ("batch", "group", "none"):
            raise ValueError(f"ResNetConfig.norm: unknown {self.norm!r}; known: batch, group, none")
        if self.last_stride not in (1, 2):
            raise ValueError(f"ResNetConfig.last_stride: must be 1 or 2, got {self.last_stride}")
        if self.stem_stride not in (1, 2, 4):
            raise ValueError(f"ResNetConfig.stem_stride: must be 1, 2 or 4, got {self.stem_stride}")


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "group":
        return nn.GroupNorm(min(8, ch), ch)
    return nn.Identity()


class BasicBlock(nn.Module):
    """3x3 conv - norm - ReLU - 3x3 conv - norm, plus a (1x1 strided) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        bias = norm == "none"
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)
        self.bn1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=bias)
        self.bn2 = _norm(norm, cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=bias), _norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


def total_stride(cfg: ResNetConfig) -> int:
    n = len(cfg.channels)
    return cfg.stem_stride * 2 ** max(n - 2, 0) * (cfg.last_stride if n > 1 else 1)


class ResNetTower(nn.Module):
    """Image tower f_θ: stem, BasicBlock stages, global average pool, linear head to embed_dim."""

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        c0 = cfg.channels[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, c0, 3, min(cfg.stem_stride, 2), 1, bias=cfg.norm == "none"),
            _norm(cfg.norm, c0),
            nn.ReLU(inplace=True),
        )
        if cfg.stem_stride == 4:
            self.stem.append(MaxPool2d(3, 2, 1))
        stages = []
        cin = c0
        for i, (cout, n) in enumerate(zip(cfg.channels, cfg.blocks)):
            stride = 1 if i == 0 else cfg.last_stride if i == len(cfg.channels) - 1 else 2
            blocks = [BasicBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1, cfg.norm)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, cfg.embed_dim)
        self.feature_dim = cin
        self.output_dim = cfg.embed_dim
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # zero-init the last norm of each residual branch: every block starts as the identity
        for m in self.modules():
            if isinstance(m, BasicBlock) and isinstance(m.bn2, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels -> (B, C, h, w), the last stage's map."""
        return self.stages(self.stem(x))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats.mean(dim=(2, 3)))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (embedding (B, D), last map (B, C, h, w)); the embedding is computed from the map."""
        feats = self.forward_features(x)
        return self.forward_head(feats), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
