"""The Retrieval tab's view: answers to text and image queries against the run's FAISS index (one
result shape: RunIndex's), the example query the tab opens with (the split's own first caption),
and the recall table of every method in the run.

    idx = RunIndex.load(run_dir)
    a = text_answer(idx, run_view, example_query(idx), k=5)   # TextAnswer: ranked test images
    c = image_answer(idx, "photo.jpg", k=5)                   # CaptionAnswer: ranked test captions
    t = recall_table(distill_view.results())                  # RecallTable: rows and a bar per method
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

RECALL_KEYS = ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10", "mean_recall")
RECALL_COLUMNS = ("method", "M", "arch", "seeds") + RECALL_KEYS


@dataclass
class ImageHit:
    rank: int                 # 1 = best
    score: float              # cosine similarity
    image: np.ndarray         # uint8 (S, S, 3)
    key: str                  # the image's file key
    own: bool = False         # the query is one of this image's own captions


@dataclass
class TextAnswer:
    query: str
    hits: list                # ImageHit, best first
    in_split: bool = False    # the query is a caption of the indexed split
    own_rank: Optional[int] = None   # then: the rank of its own image, None when not in the top k

    def summary(self, example: bool = False) -> str:
        head = f"top {len(self.hits)} test images for “{self.query}”"
        if example:
            head = f"example query (a caption of the test split): {head}"
        if not self.in_split:
            return head
        where = (f"its own image is ranked **#{self.own_rank}**" if self.own_rank else
                 f"its own image is not in the top {len(self.hits)}")
        return f"{head}; {where}" if example else f"{head} (a caption of the test split: {where})"


@dataclass
class CaptionHit:
    rank: int
    score: float
    caption: str
    pair: int                 # data/pairs.json pair id of the caption


@dataclass
class RecallTable:
    columns: tuple            # RECALL_COLUMNS
    rows: list                # one list a method: method, M, arch, seeds, then recalls (%) rounded to 0.01
    names: list = field(default_factory=list)      # bar labels "method (arch, M=…)"
    mean: list = field(default_factory=list)       # mean recall (%) a method
    std: list = field(default_factory=list)        # its std over student seeds (0 when not recorded)


def example_query(idx) -> str:
    """The first caption of the indexed split (a caption of the run's own data)."""
    return str(idx.items["captions"][0])


def _image_of(idx, run_view, i: int, image_id: int) -> np.ndarray:
    img = idx.image_u8(i)
    return np.asarray(img) if img is not None else run_view.images()[int(image_id)]


def text_answer(idx, run_view, text: str, k: int = 5) -> TextAnswer:
    """The top-k test images for a caption. DataError for an empty caption."""
    hits = idx.query_text(text, int(k))
    caps = idx.items["captions"]
    own_img = int(idx.caption_image[caps.index(text)]) if text in caps else -1
    own = next((h["rank"] for h in hits if h["image"] == own_img), None)
    return TextAnswer(text, [ImageHit(h["rank"], h["score"], _image_of(idx, run_view, h["image"], h["image_id"]),
                                      h["key"], h["image"] == own_img) for h in hits], own_img >= 0, own)


def image_answer(idx, image, k: int = 5) -> list:
    """The top-k test captions for an image (a path, PIL image or array; decoded by mdw.data.decode):
    [CaptionHit], best first. DataError for an unreadable image."""
    return [CaptionHit(h["rank"], h["score"], h["caption"], h["pair_id"]) for h in idx.query_image(image, int(k))]


def _num(v):
    return round(float(v), 2) if isinstance(v, (int, float)) and not isinstance(v, bool) else ""


def recall_table(results: list) -> RecallTable:
    """eval/results.json rows (DistillView.results()) as a table and a bar chart's data."""
    rows = [[r.get("method"), r.get("M"), r.get("arch"), r.get("seeds")] + [_num(r.get(k)) for k in RECALL_KEYS]
            for r in results]
    names = [f"{r.get('method')} ({r.get('arch')}, M={r.get('M')})" for r in results]
    mean = [float(r.get("mean_recall") or 0) for r in results]
    std = [float(r.get("mean_recall_std") or 0) for r in results]
    return RecallTable(RECALL_COLUMNS, rows, names, mean, std)
