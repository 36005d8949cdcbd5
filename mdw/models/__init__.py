"""Models: presets -> MDWModel (image tower f, frozen text encoder g0, trainable projection h).

    from mdw.models import build_model, cached_g0_features
    model = build_model(cfg.model, image_size=cfg.data.image_size, seed=0)
    g0 = cached_g0_features(captions, model.text, cache_dir)      # (N, g0_dim), computed once
    img, txt, scale = model(images01, g0[batch])                   # normalised embeddings, 1/τ

open_clip and transformers are imported only when a model is built.
"""
from .model import MDWModel
from .presets import (DEFAULT_PRESET, PRESETS, Preset, build_model, describe_presets, model_summary,
                      parse_preset, resolve_device)
from .text import FrozenTextEncoder, TokenFeatures, Word, merge_bpe, merge_wordpieces
from .text_cache import cached_g0_features, text_cache_path, text_fingerprint
from .towers import Normalize, ResNetConfig, ResNetTower

__all__ = [
    "MDWModel", "DEFAULT_PRESET", "PRESETS", "Preset", "build_model", "describe_presets", "model_summary",
    "parse_preset", "resolve_device", "FrozenTextEncoder", "TokenFeatures", "Word", "merge_bpe",
    "merge_wordpieces", "cached_g0_features", "text_cache_path", "text_fingerprint", "Normalize",
    "ResNetConfig", "ResNetTower",
]
