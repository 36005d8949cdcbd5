"""Per-word heatmaps of (image, caption) pairs (METHOD §7): integrated gradients with Grad-CAM.

    wm = word_maps(model, images01, captions)        # one WordMaps per caption
    wm[0].words, wm[0].positions, wm[0].maps, wm[0].scores

Words: the text tower's tokens merged into words (`model.text.token_features`: WordPiece for the
MiniLM presets, BPE for open_clip text towers; special tokens already dropped), then grouped by the
whitespace word of the caption they fall in, so that the output is aligned with `caption.split()`:
"circle," gives one word "circle" (the comma piece is punctuation and dropped) and "can't" gives
one word made of its pieces. Words that are punctuation only are dropped; a piece that cannot be
aligned (rare: text the tokenizer rewrites) is kept with position -1.

A word's feature is h (the trainable projection) applied to the mean of its tokens' last hidden
states in g0's space; its score is s(v, w) = cos(f(v), h(w)). Its map is drawn for the word's
direction minus `contrast` times the caption's (a token state shares much of its caption's
meaning; the difference is what the word adds), plus its neighbours' directions (`with_context`),
as CamOptions.attribution says: by default the mean of integrated gradients on the pixels
(`mdw.models.attribution`) and Grad-CAM on the image tower's last spatial map (`mdw.models.gradcam`:
aligned cells, shift-and-stitch, positive channel weights).

Distilled pairs have no words of their own: pass their decoded nearest captions as `captions`
with `image_of` pointing each caption at its distilled image.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.attribution import integrated_gradients
from ..models.gradcam import blur_maps, eval_mode, gradcam_with_scores, normalise_maps
from ..models.text import TokenFeatures
from ..models.text_context import TextFit
from .config import CamOptions  # defined with the stage's settings (no heavy imports); importable from here too

_EDGE_PUNCT = re.compile(r"^\W+|\W+$")


@dataclass
class WordMaps:
    """The heatmaps of one (image, caption) pair."""
    caption: str
    words: list            # display text of each kept word (as written in the caption)
    positions: list        # index of each word in caption.split(), -1 when not aligned
    maps: np.ndarray       # (n_words, S, S) float32 in [0, 1]
    scores: np.ndarray     # (n_words,) float32: s(v, w)
    pair_score: float      # s(v, t) for the whole caption
    sentence_map: Optional[np.ndarray] = None  # (S, S): Grad-CAM of s(v, t)
    words_encoded: Optional[int] = None  # N: caption.split() words inside the text encoder's context
    words_total: Optional[int] = None    # M: len(caption.split()); None (both) when not known

    @property
    def fit(self) -> Optional[TextFit]:
        """How much of the caption the text encoder read (None when not known)."""
        return None if self.words_encoded is None else TextFit(self.words_encoded, self.words_total)

    @property
    def cut(self) -> bool:
        """Whether the caption was longer than the text encoder's context (words after N unread)."""
        return self.fit is not None and self.fit.cut

    def cut_note(self) -> str:
        """"" or e.g. "the caption is longer than the text encoder's context: the first 126 of 481
        words are encoded (no maps for the rest)"."""
        if not self.cut:
            return ""
        return f"the caption is longer than the text encoder's context: {self.fit.describe()} (no maps for the rest)"

    def beyond_context(self, word: str) -> bool:
        """Whether `word` is in the caption only after the words the text encoder read."""
        if not self.cut:
            return False
        low = norm_text(word)
        at = [i for i, w in enumerate(self.caption.split()) if norm_text(w) == low]
        return bool(at) and min(at) >= self.words_encoded

    def word_index(self, word: str) -> Optional[int]:
        """Index of the first word equal to `word` (case-insensitive), or None."""
        low = word.strip().lower()
        return next((i for i, w in enumerate(self.words) if w.lower() == low), None)

    def at_position(self, pos: int) -> Optional[int]:
        """Index of the word at caption.split() position `pos`, or None."""
        return next((i for i, p in enumerate(self.positions) if p == pos), None)


# -- words ------------------------------------------------------------------------------------------
def norm_text(s: str) -> str:
    """Lower case, accents stripped, letters and digits only (how words are matched to the caption)."""
    s = unicodedata.normalize("NFKD", s.lower())
    return "".join(ch for ch in s if ch.isalnum() and not unicodedata.combining(ch))


def align_to_split(pieces: Sequence[str], caption: str) -> list:
    """For each merged word (tokenizer text), its index in caption.split(), or -1.

    Greedy left-to-right character matching on `norm_text`; pieces that are punctuation only are
    given -1 (they are dropped from the heatmaps).
    """
    toks = [norm_text(t) for t in caption.split()]
    out: list = []
    i, rest = 0, toks[0] if toks else ""
    for piece in pieces:
        p = norm_text(piece)
        if not p:
            out.append(-1)
            continue
        while i < len(toks) and not rest:
            i += 1
            rest = toks[i] if i < len(toks) else ""
        if i < len(toks) and rest.startswith(p):
            out.append(i)
            rest = rest[len(p):]
            continue
        j = next((j for j in range(i + 1, len(toks)) if toks[j].startswith(p)), None)
        if j is None:
            out.append(-1)
            continue
        i, rest = j, toks[j][len(p):]
        out.append(i)
    return out


@dataclass
class CaptionWords:
    """The kept words of one caption: display text, split position, token rows of each."""
    words: list
    positions: list
    token_rows: list       # per word: the token indices (into TokenFeatures.hidden) averaged


def caption_words(tf: TokenFeatures, caption: str, limit: Optional[int] = None) -> CaptionWords:
    """Group the tokenizer's merged words by caption.split() word; drop punctuation-only words and,
    with `limit` (the words inside the text encoder's context, TextFit.encoded), the pieces of any
    word at or after split position `limit` (a word the context cuts in the middle)."""
    split = caption.split()
    pos = align_to_split([w.text for w in tf.words], caption)
    groups: dict = {}
    order: list = []
    for w, p in zip(tf.words, pos):
        if not norm_text(w.text) or (limit is not None and p >= limit):
            continue  # punctuation-only piece, or a piece of a word the context cut
        key = ("pos", p) if p >= 0 else ("free", len(order))
        if key not in groups:
            groups[key] = ([], [])
            order.append(key)
        groups[key][0].append(w.text)
        groups[key][1].extend(w.positions)
    words, positions, rows = [], [], []
    for key in order:
        texts, toks = groups[key]
        p = key[1] if key[0] == "pos" else -1
        shown = _EDGE_PUNCT.sub("", split[p]) if p >= 0 else "".join(texts)
        words.append(shown or "".join(texts))
        positions.append(int(p))
        rows.append(sorted(set(toks)))
    return CaptionWords(words, positions, rows)


def word_features(tf: TokenFeatures, cw: CaptionWords) -> torch.Tensor:
    """(n_words, g0_dim): the mean of each word's token states (g0's space, before h)."""
    if not cw.token_rows:
        return tf.hidden.new_zeros((0, tf.hidden.shape[-1]))
    return torch.stack([tf.hidden[rows].mean(0) for rows in cw.token_rows])


def with_context(directions: torch.Tensor, positions: Sequence[Sequence[int]], weights: tuple) -> torch.Tensor:
    """(B, K, D) unit word directions -> each plus weights[0] × the previous and weights[1] × the next
    word's direction (by caption.split() position; words without a position, and padding, get none),
    normalised again. A modifier and the noun next to it name one object ("a red circle"), and the
    contextual token states alone mix in the rest of the caption; chosen on the scenes pointing
    game's dev split (docs/benchmarks/heatmaps.md)."""
    if not any(weights):
        return directions
    out = directions.clone()
    for b, pos in enumerate(positions):
        at = {p: i for i, p in enumerate(pos) if p >= 0}
        for i, p in enumerate(pos):
            if p < 0:
                continue
            for w, q in zip(weights, (p - 1, p + 1)):
                if w and q in at:
                    out[b, i] = out[b, i] + w * directions[b, at[q]]
    return F.normalize(out, dim=-1)


# -- maps -------------------------------------------------------------------------------------------
def _cam_maps(model, x: torch.Tensor, targets: torch.Tensor, size: int, cam: CamOptions) -> tuple:
    """(maps (B, K, S, S) in [0, 1], sims (B, K)): Grad-CAM as `cam` says (aligned cells,
    shift-and-stitch, positive weights, flip averaging, blur)."""
    kw = dict(out_size=size, relu=cam.relu, align=cam.align, shifts=cam.shifts, positive=cam.positive,
              layer=cam.layer, weighting=cam.weighting)
    maps, sims = gradcam_with_scores(model, x, targets, **kw)
    if cam.flip:
        flipped, _ = gradcam_with_scores(model, x.flip(-1), targets, **kw)
        maps = normalise_maps(0.5 * (maps + flipped.flip(-1)))
    if cam.blur > 0:
        maps = normalise_maps(blur_maps(maps, cam.blur * size))
    return maps, sims


def to_float01(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, S, S, 3) uint8 or (N, 3, S, S) float in [0, 1] -> (N, 3, S, S) float32."""
    t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if t.dtype == torch.uint8:
        return t.permute(0, 3, 1, 2).float().div(255.0)
    return t.float()


def word_maps(model, images, captions: Sequence[str], image_of: Optional[Sequence[int]] = None,
              out_size: Optional[int] = None, batch_size: int = 64, cam: CamOptions = CamOptions()) -> list:
    """One WordMaps per caption: caption c is shown with images[image_of[c]] (default: images[c]).

    images: (M, S, S, 3) uint8 or (M, 3, S, S) float in [0, 1]. The model is used in eval mode
    (restored afterwards) and its parameters get no gradients. A caption longer than the text
    encoder's context gets maps for the words it read only: WordMaps.words_encoded of words_total
    (`mdw.models.text_context`; `cut_note()` says it in words).
    """
    images = images if isinstance(images, torch.Tensor) else np.asarray(images)
    idx = np.arange(len(captions)) if image_of is None else np.asarray(image_of, dtype=np.int64)
    if len(idx) != len(captions):
        raise ValueError(f"word_maps: {len(captions)} captions but {len(idx)} image indices")
    channels_last = images.dtype == torch.uint8 if isinstance(images, torch.Tensor) else images.dtype == np.uint8
    size = int(out_size or (images.shape[1] if channels_last else images.shape[-1]))
    out: list = []
    for start in range(0, len(captions), batch_size):
        caps = list(captions[start:start + batch_size])
        rows = idx[start:start + batch_size]
        x = to_float01(images[torch.from_numpy(rows)] if isinstance(images, torch.Tensor) else images[rows])
        out += _batch_maps(model, x, caps, size, cam)
    return out


def _batch_maps(model, x: torch.Tensor, caps: list, size: int, cam: CamOptions) -> list:
    tfs = model.text.token_features(caps)
    fits = model.text.text_context().fit(caps)
    cws = [caption_words(tf, c, f.encoded) for tf, c, f in zip(tfs, caps, fits)]
    n_max = max([len(cw.words) for cw in cws] + [0])
    dev = model.device
    words = torch.zeros((len(caps), n_max, model.embed_dim), device=dev)
    with torch.no_grad():
        sent = F.normalize(model.encode_text(caps), dim=-1)                 # (B, D), the whole caption
        for b, (tf, cw) in enumerate(zip(tfs, cws)):
            if cw.words:
                words[b, :len(cw.words)] = F.normalize(model.encode_text_g0(word_features(tf, cw).to(dev)), dim=-1)
    mask = (words.abs().sum(-1, keepdim=True) > 0).float()                 # padded words stay zero
    directions = with_context(F.normalize(words - cam.contrast * sent[:, None] * mask, dim=-1),
                              [cw.positions for cw in cws], cam.context)
    targets = torch.cat([sent[:, None], directions], 1)
    maps, sims = None, None
    if cam.attribution in ("cam", "ig+cam"):
        maps, sims = _cam_maps(model, x, targets, size, cam)
    if cam.attribution in ("ig", "ig+cam"):
        ig, sims = integrated_gradients(model, x, targets, cam.ig_steps, out_size=size, blur=cam.ig_blur * size)
        maps = ig if maps is None else normalise_maps(0.5 * (maps + ig))
    with torch.no_grad(), eval_mode(model):
        img = model.encode_image(x.to(dev)).float()
    scores = torch.einsum("bd,bkd->bk", img, words).cpu().numpy()           # s(v, w) of the words themselves
    maps = maps.cpu().numpy()
    res = []
    for b, (cap, cw, fit) in enumerate(zip(caps, cws, fits)):
        n = len(cw.words)
        res.append(WordMaps(cap, cw.words, cw.positions, maps[b, 1:1 + n].astype(np.float32),
                            scores[b, :n].astype(np.float32), float(sims[b, 0]), maps[b, 0].astype(np.float32),
                            fit.encoded, fit.total))
    return res
