"""Model presets: a name (or an open_clip architecture) -> an MDWModel on a device.

`ModelConfig.preset` is one of
- a built-in preset of `PRESETS` (frozen MiniLM text encoder + a from-scratch ResNet tower);
- `ARCH`, `ARCH:TAG` or `ARCH:/path/to/checkpoint` (optionally prefixed `openclip:`) for any
  open_clip architecture (`open_clip.list_models()`): random init, a pretrained tag (from the
  local cache when offline), or a local checkpoint file.
`ModelConfig.embed_dim = 0` means the preset's own embedding size.
"""
from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass, field, replace
from typing import Iterator, Optional

import torch

from ..config import ModelConfig
from ..errors import ModelError
from .model import MDWModel
from .openclip import build_openclip
from .text import FrozenTextEncoder
from .towers import Normalize, ResNetConfig, ResNetTower, total_stride

OPENCLIP_PREFIX = "openclip:"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    tower: ResNetConfig = field(default_factory=ResNetConfig)
    image_size: int = 64          # the image size the preset is meant for (data.image_size)
    embed_dim: int = 256
    text_proj: str = "mlp"        # h: mlp (2 layers) | linear


PRESETS = {
    # GroupNorm, not BatchNorm: students learn from M synthetic images whose batch statistics say
    # nothing about real test images (measured, scenes M = 20: BN students 5.5 vs GN 8.0 mean recall)
    p.name: p for p in (
        Preset("cpu-small",
               "frozen MiniLM-L6 text encoder (384-d) + 2-layer projection; ResNet 32-64-128-256 "
               "(1 BasicBlock a stage, ~1.3 M parameters, stride-4 stem, last map 4x4 at 64 px), 64 px, "
               "256-d embeddings. The default; CPU-friendly.",
               ResNetConfig(channels=(32, 64, 128, 256), blocks=(1, 1, 1, 1), stem_stride=4, last_stride=1,
                            embed_dim=256, norm="group"), 64, 256),
        Preset("cpu-wide",
               "frozen MiniLM-L6 text encoder + 2-layer projection; ResNet 48-96-192-384 (1 BasicBlock a "
               "stage, ~2.9 M parameters), 64 px, 256-d embeddings. A second CPU architecture, for "
               "cross-architecture evaluation of distilled sets.",
               ResNetConfig(channels=(48, 96, 192, 384), blocks=(1, 1, 1, 1), stem_stride=4, last_stride=1,
                            embed_dim=256, norm="group"), 64, 256),
        Preset("gpu-base",
               "frozen MiniLM-L6 text encoder + 2-layer projection; ResNet 64-128-256-512 "
               "(2 BasicBlocks a stage, ~11 M parameters), 128 px, 512-d embeddings. For a GPU.",
               ResNetConfig(channels=(64, 128, 256, 512), blocks=(2, 2, 2, 2), embed_dim=512, norm="group"), 128, 512),
    )
}
DEFAULT_PRESET = "cpu-small"

OPENCLIP_HELP = ("an open_clip architecture as 'ARCH' (random init), 'ARCH:TAG' (pretrained tag) or "
                 "'ARCH:/path/to/open_clip_pytorch_model.bin' (local checkpoint); names: open_clip.list_models()")


def describe_presets() -> list[tuple[str, str]]:
    """[(name, description)] of the built-in presets, then the open_clip form."""
    return [(p.name, p.description) for p in PRESETS.values()] + [("ARCH[:TAG_OR_PATH]", OPENCLIP_HELP)]


def parse_preset(preset: str) -> tuple[str, str, str]:
    """-> ("builtin", name, "") or ("openclip", arch, tag_or_path); ModelError when unknown."""
    import open_clip

    p = (preset or DEFAULT_PRESET).strip()
    if p in PRESETS:
        return "builtin", p, ""
    rest = p[len(OPENCLIP_PREFIX):] if p.startswith(OPENCLIP_PREFIX) else p
    arch, _, tag = rest.partition(":")
    if arch in open_clip.list_models():
        return "openclip", arch, tag.strip()
    names = list(PRESETS) + open_clip.list_models()
    close = difflib.get_close_matches(arch, names, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ModelError(f"unknown model preset {preset!r}.{hint} Presets: {', '.join(PRESETS)}; or {OPENCLIP_HELP}")


def resolve_device(name: str = "auto") -> torch.device:
    """auto: CUDA when present, else CPU; or cpu | cuda | cuda:N | mps."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ModelError(f"model.device: unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"model.device: {name!r} asked for, but CUDA is not available here; use auto or cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"model.device: {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ModelError("model.device: 'mps' asked for, but it is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"model.device: unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return dev


@contextlib.contextmanager
def _seeded(seed: Optional[int]) -> Iterator[None]:
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(cfg: ModelConfig, image_size: int, seed: Optional[int] = None) -> MDWModel:
    """Build the model a ModelConfig names, for images of `image_size` px, on cfg.device.

    `seed` makes the initialisation of the trainable parts reproducible (two DTCL tracks: two seeds)
    without touching the global RNG.
    """
    kind, name, tag = parse_preset(cfg.preset)
    if cfg.embed_dim < 0:
        raise ModelError(f"model.embed_dim: must be >= 0 (0: the preset's own), got {cfg.embed_dim}")
    device = resolve_device(cfg.device)
    with _seeded(seed):
        if kind == "builtin":
            model = _build_builtin(PRESETS[name], cfg.embed_dim, image_size)
        else:
            visual, text, logit_scale, mean, std, size = build_openclip(name, tag, cfg.embed_dim)
            model = MDWModel(visual, text, Normalize(mean, std, size=size), cfg.preset, image_size, logit_scale)
    return model.to(device)


def _build_builtin(p: Preset, embed_dim: int, image_size: int) -> MDWModel:
    tower_cfg = replace(p.tower, embed_dim=embed_dim or p.embed_dim)
    stride = total_stride(tower_cfg)
    if image_size < stride:
        raise ModelError(f"model preset {p.name}: image size {image_size} px is below the tower's total stride "
                         f"({stride} px); use data.image_size >= {stride} (the preset is meant for {p.image_size} px)")
    visual = ResNetTower(tower_cfg)
    text = FrozenTextEncoder(embed_dim=tower_cfg.embed_dim, proj_type=p.text_proj)
    return MDWModel(visual, text, Normalize(), p.name, image_size)


def model_summary(model: MDWModel) -> dict:
    """Sizes and identities of a built model, for logs, run folders and the app."""
    frozen = sum(p.numel() for p in model.text.parameters()) - sum(p.numel() for p in model.text.proj.parameters())
    return {
        "preset": model.preset,
        "image_size": model.image_size,
        "embed_dim": model.embed_dim,
        "g0_dim": model.g0_dim,
        "text_encoder": model.text.encoder_id,
        "trainable_params": model.num_trainable(),
        "image_tower_params": sum(p.numel() for p in model.visual.parameters() if p.requires_grad),
        "projection_params": sum(p.numel() for p in model.text.proj.parameters()),
        "frozen_text_params": frozen,
        "device": str(model.device),
    }
