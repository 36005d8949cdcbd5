"""MDWModel: image tower f_θ, frozen text encoder g0 with trainable projection h_θ, logit scale.

s(v, t) = cos(f(v), h(g0(t))); logits = s * exp(logit_scale) (= s / τ), τ learnable, initialised
to 0.07 (or to a pretrained checkpoint's value). Training runs on cached g0 features
(`encode_text_g0`), so g0 never runs in the training loop.

Trainable parameters (`trainable_parameters`, the trajectory buffer's flat vector): the image
tower, h and logit_scale; never the frozen text transformer. With `image_trainable=False` the image
tower's body is frozen too (kept in eval mode, so BatchNorm statistics stay put): only its `head`
(when it has one), h and logit_scale train, and only they are in the buffer. BatchNorm running statistics are
buffers, not parameters: they are NOT in `flat_params()`; `flat_buffers()` /
`load_flat_buffers()` carry them separately for whoever needs eval-mode snapshots.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .towers import Normalize

INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


class MDWModel(nn.Module):
    def __init__(self, visual: nn.Module, text: nn.Module, normalize: Normalize, preset: str,
                 image_size: int, logit_scale: Optional[float] = None, image_trainable: bool = True):
        super().__init__()
        self.normalize = normalize     # [0, 1] pixels -> tower input (and resize, for open_clip towers)
        self.visual = visual           # f_θ: forward(x) and forward_with_features(x) -> (emb, map)
        self.text = text               # g0 (frozen) + proj h (trainable)
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE if logit_scale is None else logit_scale))
        self.preset = preset
        self.image_size = image_size   # the size of the images this model is fed (the data cache's)
        self.image_trainable = bool(image_trainable)
        self._frozen_body = [] if image_trainable else [m for n, m in visual.named_children() if n != "head"]
        for m in self._frozen_body:
            m.requires_grad_(False).eval()
        keep = {id(p) for p in visual.parameters()} | {id(p) for p in text.proj.parameters()} | {id(self.logit_scale)}
        self._trainable = [n for n, p in self.named_parameters() if id(p) in keep and p.requires_grad]

    def train(self, mode: bool = True) -> "MDWModel":
        super().train(mode)
        for m in self._frozen_body:   # a frozen body never leaves eval mode
            m.eval()
        return self

    # -- sizes -------------------------------------------------------------------------------
    @property
    def g0_dim(self) -> int:
        return int(self.text.g0_dim)

    @property
    def embed_dim(self) -> int:
        return int(self.visual.output_dim)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    # -- encoders ----------------------------------------------------------------------------
    def encode_image(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, 3, S, S) pixels in [0, 1] -> (B, embed_dim)."""
        emb = self.visual(self.normalize(x))
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_image_with_features(self, x: torch.Tensor, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (embedding (B, embed_dim), last spatial map (B, C, h, w)); for Grad-CAM."""
        emb, feats = self.visual.forward_with_features(self.normalize(x))
        return (F.normalize(emb, dim=-1) if normalize else emb), feats

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) pixels in [0, 1] -> (B, C, h, w), the image tower's last spatial map."""
        return self.visual.forward_features(self.normalize(x))

    def encode_text_g0(self, g0: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Cached (or synthetic, T̃) g0 features (N, g0_dim) -> (N, embed_dim) via h."""
        emb = self.text.project(g0)
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_text(self, captions: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Captions -> (N, embed_dim): the full path h(g0(t)); g0 runs without grad."""
        return self.encode_text_g0(self.text.encode_g0(captions).to(self.device), normalize)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale) = 1/τ, capped at 100 as in CLIP."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def forward(self, images: torch.Tensor, g0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (image embeddings, text embeddings, 1/τ); embeddings L2-normalised."""
        return self.encode_image(images), self.encode_text_g0(g0), self.scale()

    def logits(self, images: torch.Tensor, g0: torch.Tensor) -> torch.Tensor:
        """(B, B) image-to-text logits z_ij = s_ij / τ."""
        img, txt, scale = self(images, g0)
        return scale * img @ txt.t()

    # -- trainable parameters as one flat vector -----------------------------------------------
    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """[(name, parameter)] of the image tower, the projection h and logit_scale, in a fixed order."""
        params = dict(self.named_parameters())
        return [(n, params[n]) for n in self._trainable]

    def trainable_names(self) -> list[str]:
        return list(self._trainable)

    def num_trainable(self) -> int:
        return sum(p.numel() for _, p in self.trainable_parameters())

    def flat_params(self) -> torch.Tensor:
        """All trainable parameters as one detached float32 CPU vector (the trajectory buffer's form)."""
        return torch.cat([p.detach().reshape(-1).float().cpu() for _, p in self.trainable_parameters()])

    @torch.no_grad()
    def load_flat_params(self, vec: torch.Tensor) -> None:
        """Copy a `flat_params()` vector back into the trainable parameters (in place)."""
        for (_, p), v in zip(self.trainable_parameters(), self._split(vec)):
            p.copy_(v.reshape(p.shape).to(p.dtype))

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: view of vec} shaped like each trainable parameter; differentiable w.r.t. vec.

        For unrolled students: `torch.func.functional_call(model, model.unflatten(theta), (x, g0))`.
        """
        return {n: v.reshape(p.shape) for (n, p), v in zip(self.trainable_parameters(), self._split(vec))}

    def _split(self, vec: torch.Tensor) -> tuple:
        sizes = [p.numel() for _, p in self.trainable_parameters()]
        if vec.dim() != 1 or vec.numel() != sum(sizes):
            raise ValueError(f"flat parameter vector: expected {sum(sizes)} values, got shape {tuple(vec.shape)}")
        return vec.split(sizes)

    def _float_buffers(self) -> list:
        return [b for _, b in self.visual.named_buffers() if b.is_floating_point()]

    def flat_buffers(self) -> torch.Tensor:
        """The image tower's float buffers (BatchNorm running mean/var) as one float32 CPU vector."""
        bufs = self._float_buffers()
        return torch.cat([b.reshape(-1).float().cpu() for b in bufs]) if bufs else torch.zeros(0)

    @torch.no_grad()
    def load_flat_buffers(self, vec: torch.Tensor) -> None:
        bufs = self._float_buffers()
        sizes = [b.numel() for b in bufs]
        if vec.numel() != sum(sizes):
            raise ValueError(f"flat buffer vector: expected {sum(sizes)} values, got {vec.numel()}")
        for b, v in zip(bufs, vec.split(sizes)):
            b.copy_(v.reshape(b.shape).to(b.dtype))
