"""Retrieval indexes of a run's clean test split, and the query API (the app's Retrieval tab).

Model specs (`load_model(run_dir, spec)`):
  expert                      the run's final expert: DTCL track A when the run has DTCL experts, else plain
  expert:<dtcl|plain>[:<T>]   one expert track (default A)
  student:<method>[:<seed>]   eval/students/<method>/seed<k>.pt (default seed 0), written by the evaluate stage

Library:
  build_run_index(run_dir, cfg, icfg=IndexConfig(), report=None) -> meta dict   (writes index/)
  RunIndex.load(run_dir) -> RunIndex
    .query_text(text, k=10)    -> [{"rank", "score", "image", "image_id", "key"}]        text → images
    .query_image(image, k=10)  -> [{"rank", "score", "caption", "caption_idx", "pair_id", "image", "key"}]
                                  image: a file path, a PIL image or an (H, W, 3) array (uint8 or [0, 1])
    .image_hits(i, k) / .caption_hits(j, k): the same for an item of the split (stored embeddings)
    .recall(ks=(1, 5, 10))     -> IR@k, TR@k, rsum, mean_recall of the whole split
    .image_u8(i)               -> (S, S, 3) uint8 of split image i (when stored)

index/ (every file written atomically; meta.json last, so its presence means a complete index):
  images.faiss, captions.faiss   FAISS inner-product indexes of the image / caption embeddings
  image_emb.npy, caption_emb.npy (n, D) float32, L2-normalised
  images_u8.npy                  (n_img, S, S, 3) uint8 images of the split (IndexConfig.store_images)
  items.json                     image_keys, image_ids (pairs.json image index) of each split image;
                                 captions, caption_pair_ids (pairs.json pair index), caption_image
                                 (split image index of each caption's own image)
  meta.json                      model spec (given and resolved), kind exact|approximate, approximate
                                 settings and their recall@10 vs exact, sizes, recall of the split, build time
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional

import numpy as np
import torch

from ..data.decode import read_square
from ..errors import ConfigError, DataError, RunError
from ..runs.layout import RunLayout
from ..runs.store import atomic_save, atomic_write_json, read_json
from . import ann
from .view_config import IndexConfig


def index_meta_path(run_dir) -> str:
    """index/meta.json of a run: written last, so its presence means a complete index."""
    return os.fspath(RunLayout(run_dir).index_meta)


# ----- models -------------------------------------------------------------------------------

def parse_spec(spec: str) -> tuple:
    """('expert', kind|None, track) or ('student', method, seed)."""
    parts = [s.strip() for s in str(spec).split(":")]
    if parts[0] == "expert" and len(parts) <= 3:
        kind = parts[1] if len(parts) > 1 and parts[1] else None
        if kind not in (None, "dtcl", "plain"):
            raise ConfigError(f"model spec {spec!r}: expert kind must be dtcl or plain")
        return "expert", kind, parts[2] if len(parts) > 2 and parts[2] else "A"
    if parts[0] == "student" and 2 <= len(parts) <= 3 and parts[1]:
        try:
            seed = int(parts[2]) if len(parts) > 2 else 0
        except ValueError:
            raise ConfigError(f"model spec {spec!r}: the student seed must be an integer") from None
        return "student", parts[1], seed
    raise ConfigError(f"model spec {spec!r}: use expert, expert:<dtcl|plain>[:<track>] or student:<method>[:<seed>]")


def resolve_spec(run_dir: str, spec: str) -> str:
    """The spec with defaults filled in (`expert` → `expert:<RunLayout.main_expert_kind()>:A`).
    RunError when the spec leaves the kind open and the run has no experts yet."""
    what, a, b = parse_spec(spec)
    if what == "student":
        return f"student:{a}:{b}"
    if a is None:
        a = RunLayout(run_dir).main_expert_kind()
        if a is None:
            raise RunError(f"{run_dir}: the run has no experts yet (no experts/dtcl or experts/plain)")
    return f"expert:{a}:{b}"


def load_model(run_dir: str, spec: str = "expert", device: Optional[str] = None):
    """The MDWModel a spec names, in eval mode (see the module docstring)."""
    from ..models.presets import build_model, model_config_from
    from ..train.experts_io import load_expert

    lay = RunLayout(run_dir)
    what, a, b = parse_spec(resolve_spec(run_dir, spec))
    if what == "expert":
        ex = lay.experts(a)
        if not ex.exists():
            raise RunError(f"{run_dir}: no {a} experts (missing {ex.meta})")
        if not ex.final(b).is_file():
            raise RunError(f"{run_dir}: no track {b!r} among the {a} experts (missing {ex.final(b)})")
        return load_expert(run_dir, a, b, device=device)
    path = lay.eval_student(a, b)
    if not path.is_file():
        raise RunError(f"{run_dir}: no student {a!r} seed {b} (missing {path}; the evaluate stage writes it)")
    s = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(model_config_from(s, device), int(s["image_size"]))
    model.load_flat_params(s["params"])
    model.load_flat_buffers(s["buffers"])
    return model.eval()


# ----- building -----------------------------------------------------------------------------

def build_indexes(image_emb, caption_emb, icfg: IndexConfig) -> tuple:
    """(image index, caption index, info): exact up to icfg.exact_max vectors, else approximate
    with its search depth tuned to icfg.target_recall (recall@10 vs exact, the other modality as queries)."""
    img, txt = ann.as_f32(image_emb), ann.as_f32(caption_emb)
    out, info = [], {"kind": "exact"}
    rng = np.random.default_rng(icfg.seed)
    for name, base, queries in (("images", img, txt), ("captions", txt, img)):
        if len(base) <= icfg.exact_max:
            out.append(ann.exact_index(base))
            continue
        index = ann.approximate_index(base, icfg.approx, icfg.hnsw_m, icfg.hnsw_ef_construction, icfg.ivf_nlist,
                                      icfg.seed)
        q = queries[rng.choice(len(queries), min(icfg.recall_queries, len(queries)), replace=False)]
        _, exact_ids = ann.search(ann.exact_index(base), q, 10)
        depth, rec = ann.tune_depth(index, exact_ids, q, 10, icfg.target_recall)
        info.update(kind="approximate", approx=icfg.approx)
        info[name] = {"depth": ann.depth_name(index), "value": depth, "recall@10_vs_exact": rec}
        out.append(index)
    return out[0], out[1], info


def build_run_index(run_dir: str, cfg, icfg: Optional[IndexConfig] = None,
                    report: Optional[Callable] = None) -> dict:
    """Embed the run's clean `icfg.split` with the model `icfg.model`, build and write index/."""
    from ..inputs import run_inputs
    from ..train.data import embed_split
    from .retrieval import recall_at_k

    icfg = (icfg or IndexConfig()).validate()
    say = report or (lambda f, m="": None)
    t0 = time.time()
    spec = resolve_spec(run_dir, icfg.model)
    say(0.05, f"index: loading {spec}")
    model = load_model(run_dir, spec, device=cfg.model.device)
    inp = run_inputs(run_dir, cfg, lambda f, m="": say(0.05 + 0.45 * f, m), eval_split=icfg.split)
    split = inp.eval
    if len(split.caption_image) == 0:
        raise RunError(f"{run_dir}: the {icfg.split!r} split is empty; nothing to index")
    say(0.5, f"index: embedding the {icfg.split} split")
    img, txt = (ann.as_f32(e) for e in embed_split(model, split))
    say(0.75, "index: building")
    t1 = time.time()
    image_index, caption_index, info = build_indexes(img, txt, icfg)
    build_s = time.time() - t1
    ps = inp.data.pairs
    img_ids, ev = ps.images_in(icfg.split), ps.pairs_in(icfg.split)
    items = {"image_keys": [ps.images.key(int(i)) for i in img_ids], "image_ids": img_ids.tolist(),
             "captions": [ps.captions[int(j)] for j in ev], "caption_pair_ids": ev.tolist(),
             "caption_image": np.asarray(split.caption_image).tolist()}
    lay = RunLayout(run_dir)
    meta_path = lay.index_meta
    if meta_path.exists():
        os.remove(meta_path)  # the old index is incomplete from here until the new meta.json lands
    ann.write_index(os.fspath(lay.index_images), image_index)
    ann.write_index(os.fspath(lay.index_captions), caption_index)
    for path, arr in ((lay.index_image_emb, img), (lay.index_caption_emb, txt)):
        atomic_save(path, lambda tmp, a=arr: np.save(tmp, a))
    if icfg.store_images:
        atomic_save(lay.index_images_u8, lambda tmp: np.save(tmp, split.images.numpy()))
    atomic_write_json(lay.index_items, items)
    meta = {"model": icfg.model, "model_resolved": spec, "preset": model.preset, "image_size": model.image_size,
            "split": icfg.split, **info, "n_images": int(len(img)), "n_captions": int(len(txt)),
            "dim": int(img.shape[1]), "recall": recall_at_k(img, txt, split.caption_image),
            "build_seconds": round(build_s, 4), "total_seconds": round(time.time() - t0, 2),
            "faiss": getattr(ann.faiss, "__version__", ""), "config": dict(vars(icfg)),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(meta_path, meta, indent=2)
    say(1.0, "index: done")
    return meta


# ----- querying -----------------------------------------------------------------------------

class RunIndex:
    """A run's index/ folder loaded for querying (see the module docstring)."""

    def __init__(self, run_dir: str, meta: dict, image_index, caption_index, image_emb: np.ndarray,
                 caption_emb: np.ndarray, items: dict, images: Optional[np.ndarray] = None, device: str = "cpu"):
        self.run_dir, self.meta, self.items = run_dir, meta, items
        self.image_index, self.caption_index = image_index, caption_index
        self.image_emb, self.caption_emb, self.images = image_emb, caption_emb, images
        self.caption_image = np.asarray(items["caption_image"], dtype=np.int64)
        self.device = device
        self._model = None

    @classmethod
    def exists(cls, run_dir: str) -> bool:
        return os.path.isfile(index_meta_path(run_dir))

    @classmethod
    def load(cls, run_dir: str, device: str = "cpu") -> "RunIndex":
        lay = RunLayout(run_dir)
        if not cls.exists(run_dir):
            raise RunError(f"{run_dir}: no retrieval index (missing {lay.index_meta}; the index stage "
                           "or `python -m mdw query --build` writes it)")
        meta = read_json(lay.index_meta)
        indexes = [ann.read_index(os.fspath(p)) for p in (lay.index_images, lay.index_captions)]
        for name, index in zip(("images", "captions"), indexes):
            if isinstance(meta.get(name), dict) and meta[name].get("value"):
                ann.set_depth(index, meta[name]["value"])
        imgs_path = lay.index_images_u8
        return cls(run_dir, meta, indexes[0], indexes[1], np.load(lay.index_image_emb),
                   np.load(lay.index_caption_emb), read_json(lay.index_items),
                   np.load(imgs_path, mmap_mode="r") if imgs_path.is_file() else None, device)

    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.run_dir, self.meta["model_resolved"], device=self.device)
        return self._model

    # encoders
    @torch.no_grad()
    def embed_text(self, text) -> np.ndarray:
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or any(not t.strip() for t in texts):
            raise DataError("text query: the caption is empty")
        return ann.as_f32(self.model.encode_text(texts))

    @torch.no_grad()
    def embed_image(self, image) -> np.ndarray:
        m = self.model
        arr = read_square(image, m.image_size)
        x = torch.tensor(arr).permute(2, 0, 1)[None].float().div(255.0).to(m.device)
        return ann.as_f32(m.encode_image(x))

    # hits
    def _image_hits(self, vec: np.ndarray, k: int) -> list:
        scores, ids = ann.search(self.image_index, vec, k)
        keys, img_ids = self.items["image_keys"], self.items["image_ids"]
        return [{"rank": r + 1, "score": float(s), "image": int(i), "image_id": int(img_ids[i]), "key": keys[i]}
                for r, (s, i) in enumerate(zip(scores[0], ids[0])) if i >= 0]

    def _caption_hits(self, vec: np.ndarray, k: int) -> list:
        scores, ids = ann.search(self.caption_index, vec, k)
        it = self.items
        return [{"rank": r + 1, "score": float(s), "caption": it["captions"][j], "caption_idx": int(j),
                 "pair_id": int(it["caption_pair_ids"][j]), "image": int(self.caption_image[j]),
                 "key": it["image_keys"][self.caption_image[j]]}
                for r, (s, j) in enumerate(zip(scores[0], ids[0])) if j >= 0]

    def query_text(self, text: str, k: int = 10) -> list:
        """Top-k images of the split for a caption, best first."""
        return self._image_hits(self.embed_text(text), k)

    def query_image(self, image, k: int = 10) -> list:
        """Top-k captions of the split for an image, best first.

        image: a path, a PIL image or an (H, W[, C]) array, decoded by `mdw.data.decode.read_square`
        (EXIF orientation applied, any mode or dtype scaled to 8-bit RGB). DataError when the file is
        missing or unreadable or the array has an unusable shape/dtype."""
        return self._caption_hits(self.embed_image(image), k)

    def image_hits(self, i: int, k: int = 10) -> list:
        """Top-k captions for split image i (its stored embedding)."""
        return self._caption_hits(self.image_emb[int(i)][None], k)

    def caption_hits(self, j: int, k: int = 10) -> list:
        """Top-k images for split caption j (its stored embedding)."""
        return self._image_hits(self.caption_emb[int(j)][None], k)

    def recall(self, ks=(1, 5, 10)) -> dict:
        """Recall (%) of the whole split from the stored embeddings (exact search)."""
        from .retrieval import recall_at_k
        return recall_at_k(self.image_emb, self.caption_emb, self.caption_image, ks)

    def image_u8(self, i: int) -> Optional[np.ndarray]:
        return None if self.images is None else np.asarray(self.images[int(i)])
