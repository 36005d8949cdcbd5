"""Any timm model as the image tower f_θ: `timm:NAME[:WEIGHTS]`, with a trainable linear head.

Weights (the part after the second colon):
- none: random init (seeded by `build_model`);
- `pretrained` (the model's default tag) or a timm tag such as `ra2_in1k`: ImageNet weights from
  the local Hugging Face cache, or downloaded when the network may be used (mdw/models/hub.py);
  offline and not cached: a ModelError at once that says how to give a local path;
- a local file (a state dict: .pth, .bin, .safetensors) or folder: a folder written by
  `timm.models.save_for_hf` (config.json with the architecture and its model_args, then weights)
  rebuilds exactly that model; a folder with only `model.safetensors` / `pytorch_model.bin`
  loads them into NAME. `timm:/path/to/folder` takes the architecture from the folder's config.

The trunk is built with `num_classes=0`; its pooled features (B, F) go through `head`
(Linear(F, embed_dim), or the identity when the preset asks for none: VL-Distill's NFNet setting).
Pixels are normalised with the weights' mean/std; a ViT with a fixed input size gets its images
resized to that size inside `Normalize` (a CNN reads any size).

Spatial map for Grad-CAM (CEO, heatmaps): a CNN's last feature map (`forward_features`, NCHW; an
NHWC map is transposed); a timm VisionTransformer's patch tokens entering its last block, reshaped
to the patch grid (B, C, gh, gw): the pooled token depends on them only through that block, so the
gradient there is informative for both `token` and `avg` pooling.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn as nn

from ..errors import ModelError
from .hub import hf_cached_file, local_path, looks_like_path, offline_reason

DEFAULT_TAG = "pretrained"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class TimmTower(nn.Module):
    """A timm trunk (num_classes=0) and a head to `embed_dim`; forward / forward_features /
    forward_with_features as the built-in towers (mdw/models/towers.py)."""

    def __init__(self, trunk: nn.Module, embed_dim: int, name: str, head: str = "linear"):
        super().__init__()
        self.trunk = trunk
        self.name = name
        self.feature_dim = int(trunk.num_features)
        if head == "none" and embed_dim in (0, self.feature_dim):
            self.head: nn.Module = nn.Identity()
            self.output_dim = self.feature_dim
        else:
            self.head = nn.Linear(self.feature_dim, embed_dim)
            self.output_dim = int(embed_dim)
        self.is_vit = _is_vit(trunk)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) normalised pixels -> (embedding (B, D), spatial map (B, C, h, w)); the
        embedding is computed from the map. ModelError for a trunk with neither kind of map."""
        if self.is_vit:
            return self._vit(x)
        t = self.trunk
        feats = t.forward_features(x)
        if feats.dim() != 4:
            raise ModelError(f"timm:{self.name}: spatial features (Grad-CAM heatmaps, CEO) are not available: its "
                             f"forward_features gives shape {tuple(feats.shape)}; supported: CNNs with a "
                             f"(B, C, h, w) map and timm VisionTransformers")
        nhwc = feats.shape[1] != self.feature_dim and feats.shape[-1] == self.feature_dim
        fmap = feats.permute(0, 3, 1, 2) if nhwc else feats
        pooled = t.forward_head(fmap.permute(0, 2, 3, 1) if nhwc else fmap, pre_logits=True)
        return self.head(pooled), fmap

    def _vit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.trunk
        t = v.patch_embed(x)
        if t.dim() == 4:                 # dynamic image size: NHWC patches
            gh, gw = t.shape[1], t.shape[2]
        else:
            gh, gw = v.patch_embed.dynamic_feat_size(x.shape[-2:]) if hasattr(v.patch_embed, "dynamic_feat_size") \
                else v.patch_embed.grid_size
        t = v.norm_pre(v.patch_drop(v._pos_embed(t)))
        for blk in v.blocks[:-1]:
            t = blk(t)
        b, n, c = t.shape
        k = n - gh * gw                  # class and register tokens first
        fmap = t[:, k:].transpose(1, 2).reshape(b, c, gh, gw)
        t = torch.cat([t[:, :k], fmap.flatten(2).transpose(1, 2)], dim=1)
        t = v.norm(v.blocks[-1](t))
        return self.head(v.forward_head(t, pre_logits=True)), fmap

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


def _is_vit(trunk: nn.Module) -> bool:
    from timm.models.vision_transformer import VisionTransformer
    return isinstance(trunk, VisionTransformer)


def input_spec(trunk: nn.Module) -> tuple[tuple, tuple, int]:
    """(mean, std, resize_to): the weights' pixel statistics, and the size a fixed-size ViT needs
    (0: any size)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config(model=trunk)
    size = 0
    pe = getattr(trunk, "patch_embed", None)
    if _is_vit(trunk) and not getattr(trunk, "dynamic_img_size", False) and pe is not None:
        size = int(pe.img_size[0])
    return tuple(cfg["mean"]), tuple(cfg["std"]), size


def parse_timm(spec: str) -> tuple[str, str]:
    """'NAME[:WEIGHTS]' or a local folder -> (name or "", weights). ModelError for an unknown name."""
    import timm

    spec = spec.strip()
    if looks_like_path(spec) and not spec.split(":")[0].strip() in timm.list_models():
        return "", spec
    name, _, weights = spec.partition(":")
    name, weights = name.strip(), weights.strip()
    if not name or not timm.is_model(name):
        import difflib
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"model preset timm:{spec}: {name!r} is not a timm model.{hint} Names: timm.list_models()")
    return name, weights


def _local_hint(name: str) -> str:
    return (f"Download the weights on a machine with network access (e.g. timm.create_model('{name}', pretrained=True) "
            f"then timm.models.save_for_hf(model, 'FOLDER')) and give the folder or file: "
            f"model.preset=\"timm:{name}:/path/to/FOLDER\"")


def create_trunk(name: str, weights: str) -> tuple[nn.Module, str]:
    """(timm model with num_classes=0, weights id for logs: 'random' | tag | file name). Raises
    ModelError for missing files, unknown tags, or hub weights that are not cached while offline."""
    import timm

    kw = dict(num_classes=0)
    try:
        if not weights:
            return timm.create_model(name, pretrained=False, **kw), "random"
        if looks_like_path(weights):
            path = local_path(weights, f"model preset timm:{name}")
            if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
                model = timm.create_model("local-dir:" + path, pretrained=True, **kw)
                arch = model.pretrained_cfg.get("architecture", "")
                if name and arch and arch != name:
                    raise ModelError(f"model preset timm:{name}:{weights}: the folder holds a {arch!r} model, not {name!r}")
                return model, os.path.basename(os.path.normpath(path))
            if os.path.isdir(path):
                files = [os.path.join(path, f) for f in WEIGHT_FILES if os.path.isfile(os.path.join(path, f))]
                if not files:
                    raise ModelError(f"model preset timm:{name}:{weights}: the folder has no config.json and none of "
                                     f"{', '.join(WEIGHT_FILES)}")
                path = files[0]
            if not name:
                raise ModelError(f"model preset timm:{weights}: a weights file needs the architecture: timm:NAME:{weights}")
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path), **kw), \
                os.path.basename(path)
        return _from_hub(name, weights, kw)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"model preset timm:{name}{':' + weights if weights else ''}: timm could not build it: {e}") from None


def _from_hub(name: str, tag: str, kw: dict) -> tuple[nn.Module, str]:
    import timm
    from timm.models import get_pretrained_cfg

    full = name if tag == DEFAULT_TAG else f"{name}.{tag}"
    try:
        pcfg = get_pretrained_cfg(full, allow_unregistered=False)
    except RuntimeError:          # timm: "Invalid pretrained tag"
        pcfg = None
    if pcfg is None:
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*") if "." in t]
        raise ModelError(f"model preset timm:{name}:{tag}: no such pretrained tag; tags: "
                         f"{', '.join([DEFAULT_TAG] + tags) if tags else '(none: this model has no pretrained weights)'}; "
                         f"or a local file or folder")
    repo = pcfg.hf_hub_id or ""
    local = hf_cached_file(repo, WEIGHT_FILES) if repo else None
    if not local and pcfg.file and os.path.isfile(pcfg.file):
        local = pcfg.file
    if local:
        return timm.create_model(full, pretrained=True, pretrained_cfg_overlay=dict(file=local), **kw), pcfg.tag or tag
    from urllib.parse import urlparse
    host = "huggingface.co" if repo else (urlparse(pcfg.url or "").hostname or "")
    reason = offline_reason(host)
    if reason:
        raise ModelError(f"model preset timm:{name}:{tag}: the pretrained weights are not in the local cache and "
                         f"cannot be downloaded offline ({reason}). {_local_hint(name)}")
    return timm.create_model(full, pretrained=True, **kw), pcfg.tag or tag


def build_timm_tower(spec: str, embed_dim: int, head: str = "linear") -> tuple:
    """'NAME[:WEIGHTS]' -> (TimmTower, mean, std, resize_to, weights id)."""
    name, weights = parse_timm(spec)
    trunk, wid = create_trunk(name, weights)
    mean, std, size = input_spec(trunk)
    tower = TimmTower(trunk, embed_dim, name or trunk.pretrained_cfg.get("architecture", "timm"), head)
    return tower, mean, std, size, wid

