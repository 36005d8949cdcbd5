"""Model presets and families: a name in the run config -> an MDWModel on a device.

`ModelConfig.preset` is one of
- a built-in preset of `PRESETS`: a from-scratch ResNet tower beside the frozen MiniLM text
  encoder (`cpu-small`, `cpu-wide`, `gpu-base`), or a named pairing of families (`nfnet-bert`);
- `timm:NAME[:WEIGHTS]`: any timm model as the image tower with a trainable linear head
  (mdw/models/timm_tower.py), beside the MiniLM text encoder unless `model.text` names another;
- `ARCH`, `ARCH:TAG` or `ARCH:/path/to/checkpoint` (optionally prefixed `openclip:`) for any
  open_clip architecture (`open_clip.list_models()`): random init, a pretrained tag (from the
  local cache when offline), or a local checkpoint file; it brings its own text tower.
`ModelConfig.text`: "" (the preset's own text encoder) or `hf:NAME_OR_PATH`, any Hugging Face or
sentence-transformers encoder as the frozen g0 (pooled by `model.text_pooling`).
`ModelConfig.image_trainable=False` freezes the image tower's body (its head, h and τ still train).
`ModelConfig.embed_dim = 0` means the preset's own embedding size.
Weights come from local paths or the local cache offline; a hub name that is neither fails at once
with a ModelError that says how to give a local path (mdw/models/hub.py).
"""
from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass, field, replace
from typing import Iterator, Optional

import torch

from ..config import ModelConfig
from ..errors import ModelError
from .hub import hf_model_source
from .model import MDWModel
from .openclip import build_openclip
from .text import FrozenTextEncoder, resolve_pooling
from .towers import Normalize, ResNetConfig, ResNetTower, total_stride

OPENCLIP_PREFIX = "openclip:"
TIMM_PREFIX = "timm:"
HF_PREFIX = "hf:"
TIMM_EMBED_DIM = 256   # a timm tower's embedding size when neither the preset nor model.embed_dim gives one


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    tower: ResNetConfig = field(default_factory=ResNetConfig)
    image_size: int = 64          # the image size the preset is meant for (data.image_size)
    embed_dim: int = 256
    text_proj: str = "mlp"        # h: mlp (2 layers) | linear
    image: str = ""               # "" : the ResNet `tower`; or a timm tower, "timm:NAME[:WEIGHTS]"
    text: str = ""                # "" : the MiniLM package; or "hf:NAME_OR_PATH"
    text_pooling: str = "mean"    # g0's pooling when `text` is set (mean | cls | auto)
    image_head: str = "linear"    # linear | none (a timm tower's pooled features are the embedding)


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
        # VL-Distill (Wu et al., TMLR 2024; github.com/princetonvisualai/multimodal_dataset_distillation,
        # networks.py) and LoRS (Xu et al., ICLR 2024, built on that code): timm nfnet_l0 with ImageNet
        # weights, num_classes=0 + average pool (2304-d, no image projection), fine-tuned; frozen BERT-base,
        # [CLS] token (768-d), a trainable projection to 2304; 224 px images.
        Preset("nfnet-bert",
               "the VL-Distill / LoRS pairing: timm nfnet_l0 (ImageNet weights, fine-tuned, its 2304-d pooled "
               "features are the embedding) + frozen BERT-base-uncased ([CLS]) with a linear projection to 2304; "
               "224 px (set data.image_size=224). Needs the weights: online, or local copies (see README).",
               image_size=224, embed_dim=2304, text_proj="linear", image="timm:nfnet_l0:pretrained",
               text="hf:bert-base-uncased", text_pooling="cls", image_head="none"),
    )
}
DEFAULT_PRESET = "cpu-small"
# The app's preset list (app/tab_runs.py): the built-in presets, then one example of each family.
PRESET_EXAMPLES = ("timm:resnet18", "timm:vit_tiny_patch16_224", "timm:nfnet_l0:pretrained", "RN50", "ViT-B-32")

TIMM_HELP = ("a timm image tower as 'timm:NAME' (random init), 'timm:NAME:pretrained' or 'timm:NAME:TAG' (ImageNet "
             "weights: the local cache offline) or 'timm:NAME:/path/to/file_or_folder'; names: timm.list_models()")
OPENCLIP_HELP = ("an open_clip architecture as 'ARCH' (random init), 'ARCH:TAG' (pretrained tag) or "
                 "'ARCH:/path/to/open_clip_pytorch_model.bin' (local checkpoint); names: open_clip.list_models()")


def describe_presets() -> list[tuple[str, str]]:
    """[(name, description)] of the built-in presets, then the timm and open_clip forms."""
    return [(p.name, p.description) for p in PRESETS.values()] + [
        ("timm:NAME[:WEIGHTS]", TIMM_HELP), ("ARCH[:TAG_OR_PATH]", OPENCLIP_HELP)]


def preset_choices() -> list[str]:
    """The names a preset list offers (the app's dropdown): built-in presets, then family examples."""
    return list(PRESETS) + list(PRESET_EXAMPLES)


def parse_preset(preset: str) -> tuple[str, str, str]:
    """-> ("builtin", name, ""), ("timm", "NAME[:WEIGHTS]", "") or ("openclip", arch, tag_or_path);
    ModelError when unknown."""
    import open_clip

    p = (preset or DEFAULT_PRESET).strip()
    if p in PRESETS:
        return "builtin", p, ""
    if p.startswith(TIMM_PREFIX):
        from .timm_tower import parse_timm
        parse_timm(p[len(TIMM_PREFIX):])      # ModelError for an unknown name
        return "timm", p[len(TIMM_PREFIX):], ""
    rest = p[len(OPENCLIP_PREFIX):] if p.startswith(OPENCLIP_PREFIX) else p
    arch, _, tag = rest.partition(":")
    if arch in open_clip.list_models():
        return "openclip", arch, tag.strip()
    names = list(PRESETS) + open_clip.list_models()
    close = difflib.get_close_matches(arch, names, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ModelError(f"unknown model preset {preset!r}.{hint} Presets: {', '.join(PRESETS)}; or {TIMM_HELP}; "
                     f"or {OPENCLIP_HELP}")


@dataclass(frozen=True)
class TextSpec:
    """The text side a ModelConfig names: the MiniLM package (source "") or a Hugging Face model."""
    source: str = ""              # "" | a local folder | a hub name (resolved by resolve_text)
    pooling: str = "mean"
    proj: str = "mlp"


def text_spec(cfg: ModelConfig) -> Optional[TextSpec]:
    """The text encoder a ModelConfig asks for, resolved to a local folder or a downloadable hub name;
    None for open_clip presets (their own text tower). ModelError for a bad `model.text`, an open_clip
    preset with `model.text`, or a hub name that is not cached while offline."""
    kind, name, _ = parse_preset(cfg.preset)
    text = (cfg.text or "").strip()
    if kind == "openclip":
        if text:
            raise ModelError(f"model.text: {cfg.preset!r} is an open_clip model and brings its own text tower; "
                             f"leave model.text empty or use a timm: or built-in preset")
        return None
    p = PRESETS.get(name)
    proj = p.text_proj if p else "linear"
    pooling = p.text_pooling if p and p.text and not text else cfg.text_pooling
    text = text or (p.text if p else "")
    if not text:
        return TextSpec("", "mean", proj)
    if not text.startswith(HF_PREFIX):
        raise ModelError(f"model.text: {text!r} is not a text encoder spec; use hf:NAME_OR_PATH (a Hugging Face or "
                         f"sentence-transformers model name or folder), or leave it empty for the preset's own")
    ref = text[len(HF_PREFIX):].strip()
    src = hf_model_source(ref, f"text encoder {text}",
                          f"Download it on a machine with network access (huggingface-cli download {ref} --local-dir "
                          f"FOLDER) and give the folder: model.text=\"hf:/path/to/FOLDER\"")
    return TextSpec(src, pooling, proj)


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
    without touching the global RNG. Raises ModelError for an unknown preset or text encoder, missing
    weights, or hub weights that are not cached while offline (at once, with the local-path form).
    """
    kind, name, tag = parse_preset(cfg.preset)
    if cfg.embed_dim < 0:
        raise ModelError(f"model.embed_dim: must be >= 0 (0: the preset's own), got {cfg.embed_dim}")
    device = resolve_device(cfg.device)
    text = text_spec(cfg)
    with _seeded(seed):
        if kind == "openclip":
            visual, txt, logit_scale, mean, std, size = build_openclip(name, tag, cfg.embed_dim)
            model = MDWModel(visual, txt, Normalize(mean, std, size=size), cfg.preset, image_size, logit_scale,
                             image_trainable=cfg.image_trainable)
        elif kind == "timm" or PRESETS[name].image:
            p = PRESETS.get(name) if kind == "builtin" else None
            from .timm_tower import build_timm_tower
            spec = p.image[len(TIMM_PREFIX):] if p else name
            dim = cfg.embed_dim or (p.embed_dim if p else TIMM_EMBED_DIM)
            visual, mean, std, size, _ = build_timm_tower(spec, dim, p.image_head if p else "linear")
            model = MDWModel(visual, _text_encoder(text, visual.output_dim), Normalize(mean, std, size=size),
                             cfg.preset, image_size, image_trainable=cfg.image_trainable)
        else:
            model = _build_builtin(PRESETS[name], cfg.embed_dim, image_size, text, cfg.image_trainable)
    return model.to(device)


def _text_encoder(text: TextSpec, embed_dim: int) -> FrozenTextEncoder:
    return FrozenTextEncoder(embed_dim=embed_dim, model_path=text.source or None, proj_type=text.proj,
                             pooling=text.pooling)


def _build_builtin(p: Preset, embed_dim: int, image_size: int, text: TextSpec, trainable: bool) -> MDWModel:
    tower_cfg = replace(p.tower, embed_dim=embed_dim or p.embed_dim)
    stride = total_stride(tower_cfg)
    if image_size < stride:
        raise ModelError(f"model preset {p.name}: image size {image_size} px is below the tower's total stride "
                         f"({stride} px); use data.image_size >= {stride} (the preset is meant for {p.image_size} px)")
    visual = ResNetTower(tower_cfg)
    return MDWModel(visual, _text_encoder(text, tower_cfg.embed_dim), Normalize(), p.name, image_size,
                    image_trainable=trainable)


MODEL_KEYS = ("preset", "embed_dim", "text", "text_pooling", "image_trainable")


def model_identity(cfg: ModelConfig) -> dict:
    """What rebuilds the same architecture (every ModelConfig field but the device), for run files."""
    return {k: getattr(cfg, k) for k in MODEL_KEYS}


def model_config_from(meta: dict, device: Optional[str] = None) -> ModelConfig:
    """The ModelConfig a run file recorded: its "model" dict (model_identity), or the older
    top-level "preset" / "embed_dim" keys."""
    got = meta.get("model") if isinstance(meta.get("model"), dict) else meta
    return ModelConfig(**{k: got[k] for k in MODEL_KEYS if k in got}, device=device or "auto")


def model_summary(model: MDWModel) -> dict:
    """Sizes and identities of a built model, for logs, run folders and the app."""
    frozen = sum(p.numel() for p in model.text.parameters()) - sum(p.numel() for p in model.text.proj.parameters())
    return {
        "preset": model.preset,
        "image_size": model.image_size,
        "embed_dim": model.embed_dim,
        "g0_dim": model.g0_dim,
        "text_encoder": model.text.encoder_id,
        "image_trainable": model.image_trainable,
        "trainable_params": model.num_trainable(),
        "image_tower_params": sum(p.numel() for p in model.visual.parameters() if p.requires_grad),
        "projection_params": sum(p.numel() for p in model.text.proj.parameters()),
        "frozen_text_params": frozen,
        "device": str(model.device),
    }
