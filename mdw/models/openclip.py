"""Any open_clip architecture as an MDW model: visual tower trainable, text tower frozen as g0.

Weights: `ARCH` (random init), `ARCH:TAG` (an open_clip pretrained tag, downloaded or taken from
the local Hugging Face / open_clip cache) or `ARCH:/path/to/checkpoint` (a local file). With no
network a tag whose weights are not cached fails at once with a ModelError that says how to pass
a local checkpoint instead.

g0 is open_clip's `encode_text` output (not normalised); h is a trainable linear map initialised
to the identity (a rectangular identity when embed_dim differs). The visual tower runs at its
native input size: images are resized (bilinear) inside the model's Normalize.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional, Sequence
from urllib.parse import urlparse

import torch
import torch.nn as nn

from ..errors import ModelError
from .hub import hf_cached_file, host_reachable, looks_like_path, network_disabled
from .text import ProgressFn, TokenFeatures, batched_in_length_order, merge_bpe, merge_wordpieces


# ---------------------------------------------------------------------------------------------
# Weights resolution (offline-aware; the rules are mdw/models/hub.py's)


def cached_weights(tag_cfg: dict) -> Optional[str]:
    """The local file of a pretrained tag's weights when already downloaded, else None."""
    if tag_cfg.get("file"):
        return tag_cfg["file"] if os.path.isfile(tag_cfg["file"]) else None
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        found = hf_cached_file(repo, names)
        if found:
            return found
    url = tag_cfg.get("url", "")
    if url:
        local = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(local):
            return local
    return None


def resolve_weights(arch: str, tag: str) -> tuple[Optional[str], dict]:
    """-> (value to pass as open_clip's `pretrained`, the tag's config dict or {})."""
    import open_clip

    if not tag:
        return None, {}
    if looks_like_path(tag):
        path = os.path.abspath(os.path.expanduser(tag))
        if not os.path.isfile(path):
            raise ModelError(f"model preset {arch}:{tag}: checkpoint file not found: {path}")
        return path, {}
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ModelError(f"model preset {arch}:{tag}: {tag!r} is neither a checkpoint file nor a pretrained tag "
                         f"of {arch}; its tags: {', '.join(tags) or '(none)'}")
    local = cached_weights(tag_cfg)
    if local:
        return local, tag_cfg
    host = "huggingface.co" if tag_cfg.get("hf_hub") else (urlparse(tag_cfg.get("url", "")).hostname or "")
    if network_disabled() or not host or not host_reachable(host):
        raise ModelError(
            f"model preset {arch}:{tag}: the pretrained weights {tag!r} are not in the local cache and cannot be "
            f"downloaded offline ({'HF_HUB_OFFLINE is set' if network_disabled() else 'no network: ' + host + ' unreachable'}). "
            f"Download them on a machine with network access and pass the local checkpoint instead: "
            f"preset=\"{arch}:/path/to/open_clip_pytorch_model.bin\"")
    return tag, tag_cfg


def weights_fingerprint(module: nn.Module, sample: int = 1024) -> str:
    """A cheap hash of a module's weights: shapes plus a strided sample of each tensor."""
    h = hashlib.sha1()
    for name, t in module.state_dict().items():
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // sample)
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(flat[::step][:sample].float().cpu().numpy().tobytes())
    return h.hexdigest()[:10]


# ---------------------------------------------------------------------------------------------
# Towers

class OpenClipVisual(nn.Module):
    """An open_clip visual tower with `forward_with_features` for Grad-CAM."""

    def __init__(self, trunk: nn.Module, output_dim: int, arch: str):
        super().__init__()
        self.trunk = trunk
        self.output_dim = output_dim
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[1]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (embedding (B, D), last spatial map (B, C, h, w)); the embedding depends on the map."""
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        v = self.trunk
        if isinstance(v, ModifiedResNet):
            feats = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(x)))))
            return v.attnpool(feats), feats
        if isinstance(v, VisionTransformer) and v.attn_pool is None and isinstance(v.patch_dropout, nn.Identity) \
                and v.transformer.batch_first:
            return self._vit_with_features(v, x)
        raise ModelError(f"spatial features (Grad-CAM heatmaps, CEO) are not available for the visual tower "
                         f"of {self.arch} ({type(v).__name__}); supported: ModifiedResNet (RN*) and plain "
                         f"ViT towers, and the built-in presets")

    @staticmethod
    def _vit_with_features(v: nn.Module, x: torch.Tensor) -> tuple:
        # The map is the patch tokens entering the LAST block: the class token's output depends on
        # them only through that block's attention, so Grad-CAM there is informative.
        t = v._embeds(x)
        blocks = v.transformer.resblocks
        for blk in blocks[:-1]:
            t = blk(t)
        b, n, c = t.shape
        gh, gw = x.shape[-2] // v.patch_size[0], x.shape[-1] // v.patch_size[1]
        feats = t[:, n - gh * gw:].transpose(1, 2).reshape(b, c, gh, gw)
        t = torch.cat([t[:, : n - gh * gw], feats.flatten(2).transpose(1, 2)], dim=1)
        t = blocks[-1](t)
        pooled, _ = v._pool(t)
        if v.proj is not None:
            pooled = pooled @ v.proj
        return pooled, feats


class FrozenOpenClipText(nn.Module):
    """g0 = a frozen open_clip text tower (`encode_text`); h = `proj`, a trainable linear map."""

    def __init__(self, clip: nn.Module, arch: str, embed_dim: int, weights_id: Optional[str] = None):
        super().__init__()
        import open_clip

        clip.visual = None  # the visual tower lives in MDWModel.visual
        for attr in ("logit_scale", "logit_bias"):
            if isinstance(getattr(clip, attr, None), nn.Parameter):
                delattr(clip, attr)
                setattr(clip, attr, None)
        self.clip = clip.requires_grad_(False).eval()
        self.arch = arch
        try:
            self.tokenizer = open_clip.get_tokenizer(arch)
        except Exception as e:  # an HF tokenizer that is not cached, offline
            raise ModelError(f"model preset {arch}: cannot load its tokenizer ({e})") from None
        with torch.no_grad():
            probe = self.clip.encode_text(self.tokenizer(["a"]))
        self.g0_dim = int(probe.shape[-1])
        self.embed_dim = embed_dim or self.g0_dim
        self._proj = nn.Linear(self.g0_dim, self.embed_dim, bias=False)
        nn.init.eye_(self._proj.weight)
        # random init: the weights themselves identify g0 (for the g0 feature cache)
        self.encoder_id = f"openclip-{arch}-{weights_id or 'random-' + weights_fingerprint(self.clip)}"

    @property
    def proj(self) -> nn.Module:
        return self._proj

    def train(self, mode: bool = True) -> "FrozenOpenClipText":
        super().train(mode)
        self.clip.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self._proj.weight.device

    def text_context(self):
        """How many words of each caption fit the tokenizer's context (a TextContext of
        mdw.models.text_context; its `fit(captions)` gives "the first N of M words")."""
        from .text_context import openclip_context
        return openclip_context(self.tokenizer, self.arch)

    def encode_g0(self, captions: Sequence[str], batch_size: int = 256,
                  progress: Optional[ProgressFn] = None) -> torch.Tensor:
        """(N, g0_dim) float32 CPU: encode_text outputs (not normalised), in caption order."""
        out = torch.zeros((len(captions), self.g0_dim), dtype=torch.float32)
        done = 0
        for idx, batch in batched_in_length_order(captions, batch_size):
            ids = self.tokenizer(batch).to(self.device)
            with torch.inference_mode():
                feats = self.clip.encode_text(ids)
            out[torch.tensor(idx)] = feats.float().cpu()
            done += len(idx)
            if progress is not None:
                progress(done, len(captions))
        return out

    def project(self, g0: torch.Tensor) -> torch.Tensor:
        return self._proj(g0)

    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        return self.project(self.encode_g0(captions).to(self.device))

    def _token_states(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, g0_dim): every token's state mapped the way the pooled one is."""
        from open_clip.hf_model import HFTextEncoder
        from open_clip.transformer import TextTransformer

        c = self.clip
        text = getattr(c, "text", None)
        if text is None:  # CLIP: the text tower's parts live on the model itself
            x = c.token_embedding(ids) + c.positional_embedding[: ids.shape[1]]
            x = c.ln_final(c.transformer(x, attn_mask=c.attn_mask[: ids.shape[1], : ids.shape[1]]))
            proj = c.text_projection
        elif isinstance(text, TextTransformer) and text.cls_emb is None:
            x, mask = text._embeds(ids)
            x = text.ln_final(text.transformer(x, attn_mask=mask))
            proj = text.text_projection
        elif isinstance(text, HFTextEncoder):
            mask = (ids != text.config.pad_token_id).long()
            return text.proj(text.transformer(input_ids=ids, attention_mask=mask).last_hidden_state)
        else:
            raise ModelError(f"token features are not available for the text tower of {self.arch}")
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def token_features(self, captions: Sequence[str], batch_size: int = 64) -> list[TokenFeatures]:
        """Per caption: tokens, their states in g0's space (n_tokens, g0_dim), and merged words."""
        from open_clip.tokenizer import SimpleTokenizer

        tk = self.tokenizer
        result: list = [None] * len(captions)
        for idx, batch in batched_in_length_order(captions, batch_size):
            ids = tk(batch).to(self.device)
            with torch.inference_mode():
                states = self._token_states(ids)
            for row, i in enumerate(idx):
                row_ids = ids[row].tolist()
                if isinstance(tk, SimpleTokenizer):
                    special = {tk.sot_token_id, tk.eot_token_id, 0}
                    keep = [j for j, t in enumerate(row_ids) if t not in special]
                    tokens = [_bpe_text(tk, row_ids[j]) for j in keep]
                    words = merge_bpe(tokens)
                    words = [w._replace(text=_bytes_to_text(tk, w.text)) for w in words]
                else:  # open_clip's HFTokenizer
                    hf = tk.tokenizer
                    keep = [j for j, t in enumerate(row_ids) if t not in set(hf.all_special_ids)]
                    tokens = hf.convert_ids_to_tokens([row_ids[j] for j in keep])
                    words = merge_wordpieces(tokens)
                result[i] = TokenFeatures(tokens=tokens, hidden=states[row, keep].float().cpu().clone(),
                                          words=words)
        return result


def _bpe_text(tk, token_id: int) -> str:
    return tk.decoder[token_id]


def _bytes_to_text(tk, s: str) -> str:
    try:
        return bytearray(tk.byte_decoder[ch] for ch in s).decode("utf-8", errors="replace")
    except KeyError:
        return s


# ---------------------------------------------------------------------------------------------
# Building

def build_openclip(arch: str, tag: str, embed_dim: int) -> tuple:
    """-> (visual OpenClipVisual, text FrozenOpenClipText, logit_scale init, mean, std, native size)."""
    import open_clip

    if open_clip.get_model_config(arch) is None:
        raise ModelError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models() for the names")
    out_dim = int(open_clip.get_model_config(arch)["embed_dim"])
    if embed_dim and embed_dim != out_dim:
        raise ModelError(f"model.embed_dim: {arch} embeds in {out_dim} dimensions; set embed_dim to 0 or {out_dim}")
    pretrained, tag_cfg = resolve_weights(arch, tag)
    try:
        clip = open_clip.create_model(arch, pretrained=pretrained, force_quick_gelu=bool(tag_cfg.get("quick_gelu")),
                                      pretrained_text=False, pretrained_image=False)
    except Exception as e:
        where = f" from {pretrained}" if pretrained else ""
        raise ModelError(f"model preset {arch}{':' + tag if tag else ''}: open_clip could not build it{where}: {e}") from None
    pcfg = open_clip.get_model_preprocess_cfg(clip)
    size = pcfg.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean = tuple(tag_cfg.get("mean", pcfg.get("mean")))
    std = tuple(tag_cfg.get("std", pcfg.get("std")))
    logit_scale = float(clip.logit_scale.detach().reshape(-1)[0]) if pretrained else None
    visual = OpenClipVisual(clip.visual, out_dim, arch)
    text = FrozenOpenClipText(clip, arch, out_dim, _file_id(pretrained) if pretrained else None)
    return visual, text, logit_scale, mean, std, size


def _file_id(path: str) -> str:
    if os.path.isfile(path):
        st = os.stat(path)
        return hashlib.sha1(f"{os.path.basename(path)}:{st.st_size}".encode()).hexdigest()[:10]
    return hashlib.sha1(path.encode()).hexdigest()[:10]
