"""How much of a caption the text encoder reads (its context), said in words: "the first N of M".

A text encoder reads a fixed number of tokens: 128 for the MiniLM presets ([CLS] and [SEP]
included, so 126 of the caption's), 77 for CLIP's BPE towers (start and end included, so 75). Its
tokenizer cuts a longer caption without a word; everything after the cut is not encoded at all.

`TextFit` says for one caption how many of its words are encoded: words are whitespace words
(`caption.split()`, as the heatmaps number them); a word counts as encoded when every one of its
tokens is inside the context (a word cut in the middle does not). `TextContext.fit` computes it from
the tokenizer alone (no weights), so every place reports it the same way:
  heatmaps        WordMaps.words_encoded / words_total; `mdw heatmap` says when text was cut, and
                  `--word` names a word beyond the context as such
  scoring         `mdw score`'s words_encoded / words_total columns and its printed count
  the data stage  data/summary.json "text_context": how many captions are cut, with examples
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..errors import ModelError

CountFn = Callable[[list], list]   # texts -> token count of each (special tokens not counted)


@dataclass(frozen=True)
class TextFit:
    """The words of one caption that the text encoder reads."""
    encoded: int    # N: leading words whose every token is inside the context
    total: int      # M: words of the caption (caption.split())

    @property
    def cut(self) -> bool:
        return self.encoded < self.total

    def describe(self) -> str:
        """E.g. "the first 126 of 481 words are encoded"."""
        return f"the first {self.encoded} of {self.total} words are encoded"


def words_that_fit(token_counts: Sequence[int], budget: int) -> int:
    """How many leading words fit in `budget` tokens: the largest n with sum(token_counts[:n]) <= budget."""
    used = 0
    for n, c in enumerate(token_counts):
        used += int(c)
        if used > budget:
            return n
    return len(token_counts)


class TextContext:
    """A tokenizer's context: `budget` caption tokens (the context minus its special tokens)."""

    def __init__(self, count_tokens: CountFn, budget: int, name: str = ""):
        if budget < 1:
            raise ModelError(f"text encoder {name or ''}: a context of {budget} caption tokens is too small")
        self.count_tokens, self.budget, self.name = count_tokens, int(budget), name

    def fit(self, captions: Sequence[str]) -> list:
        """One TextFit per caption (str), in order. Only captions that may be too long are tokenized:
        a caption of at most `budget` bytes (whitespace not counted) cannot have more tokens."""
        out: list = [None] * len(captions)
        maybe = []
        for i, c in enumerate(captions):
            words = c.split()
            if sum(len(w.encode("utf-8")) for w in words) <= self.budget:
                out[i] = TextFit(len(words), len(words))
            else:
                maybe.append(i)
        if maybe:
            whole = self.count_tokens([captions[i] for i in maybe])
            for i, n_tokens in zip(maybe, whole):
                words = captions[i].split()
                n = len(words) if n_tokens <= self.budget else words_that_fit(self.count_tokens(words), self.budget)
                out[i] = TextFit(n, len(words))
        return out

    def summary(self, captions: Sequence[str], n_examples: int = 3) -> dict:
        """For data/summary.json: {"encoder", "context_tokens", "captions", "truncated_captions",
        "longest_words", "examples": [{"caption" (first 80 characters), "words_encoded", "words_total"}]}."""
        cut, longest, examples = 0, 0, []
        for lo in range(0, len(captions), 65536):     # a chunk of fits at a time: bounded memory
            chunk = captions[lo:lo + 65536]
            for c, f in zip(chunk, self.fit(chunk)):
                longest = max(longest, f.total)
                if f.cut:
                    cut += 1
                    if len(examples) < n_examples:
                        examples.append({"caption": c[:80], "words_encoded": f.encoded, "words_total": f.total})
        return {"encoder": self.name, "context_tokens": self.budget, "captions": len(captions),
                "truncated_captions": cut, "longest_words": longest, "examples": examples}


def hf_context(tokenizer, max_length: int, name: str = "") -> TextContext:
    """The context of a Hugging Face tokenizer cutting at `max_length` tokens, special tokens included."""
    def count(texts: list) -> list:
        ids = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]
    return TextContext(count, max_length - tokenizer.num_special_tokens_to_add(), name)


def openclip_context(tokenizer, name: str = "") -> TextContext:
    """The context of an open_clip tokenizer: SimpleTokenizer (BPE, start + end tokens) or one
    wrapping a Hugging Face tokenizer (HFTokenizer, SigLipTokenizer). ModelError for others."""
    from open_clip.tokenizer import SimpleTokenizer

    length = int(getattr(tokenizer, "context_length", 0) or 0)
    if isinstance(tokenizer, SimpleTokenizer):
        return TextContext(lambda texts: [len(tokenizer.encode(t)) for t in texts], length - 2, name)
    hf = getattr(tokenizer, "tokenizer", None)
    if hf is not None and hasattr(hf, "num_special_tokens_to_add") and length:
        return hf_context(hf, length, name)
    raise ModelError(f"text encoder {name}: cannot count the tokens of its tokenizer "
                     f"({type(tokenizer).__name__}) to say how much of a caption fits its context")


def preset_context(model) -> TextContext:
    """The TextContext of a model's text encoder (`model`: a preset name or a ModelConfig), from its
    tokenizer only (no weights loaded). ModelError when the preset or text encoder is unknown or its
    tokenizer cannot be loaded."""
    from ..config import ModelConfig
    from .presets import parse_preset, text_spec
    from .text import MAX_TOKENS, load_tokenizer

    cfg = model if isinstance(model, ModelConfig) else ModelConfig(preset=model)
    kind, name, _ = parse_preset(cfg.preset)
    if kind != "openclip":
        source = text_spec(cfg).source
        tok = load_tokenizer(source or None)
        length = min(MAX_TOKENS, int(getattr(tok, "model_max_length", MAX_TOKENS) or MAX_TOKENS))
        return hf_context(tok, length, os.path.basename(os.path.normpath(source)) if source else "MiniLM")
    import open_clip
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:  # an HF tokenizer that is not cached, offline
        raise ModelError(f"model preset {name}: cannot load its tokenizer ({e})") from None
    return openclip_context(tokenizer, name)


def context_summary(captions: Sequence[str], model) -> dict:
    """`TextContext.summary` for `model` (a preset name or a ModelConfig), or
    {"truncated_captions": None, "error": text} when its tokenizer cannot be loaded (the data stage
    goes on; the model stage reports the error)."""
    try:
        return preset_context(model).summary(captions)
    except ModelError as e:
        return {"truncated_captions": None, "error": str(e)}


def describe_cut(cut: int, total: int, tokens: Optional[int] = None) -> str:
    """"" when no caption is cut (cut == 0), else e.g. "2 of 10 captions are longer than the text
    encoder's context (126 tokens): only their first words are encoded"."""
    if not cut:
        return ""
    context = f" ({tokens} tokens)" if tokens else ""
    return f"{cut} of {total} captions are longer than the text encoder's context{context}: only their first words are encoded"
