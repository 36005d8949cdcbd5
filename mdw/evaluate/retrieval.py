"""Image↔text retrieval recall through a FAISS inner-product index (METHOD §8).

TR@K (image→text): hit when any caption of the image is among its top K captions.
IR@K (text→image): hit when the caption's image is among its top K images.
Embeddings are L2-normalised, so inner product = cosine similarity.
"""
from __future__ import annotations

import faiss
import numpy as np

KS = (1, 5, 10)


def _as_f32(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def search(index_vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple:
    """(scores, ids) of the top k by inner product, from an exact FAISS index."""
    index_vectors, queries = _as_f32(index_vectors), _as_f32(queries)
    index = faiss.IndexFlatIP(index_vectors.shape[1])
    index.add(index_vectors)
    return index.search(queries, min(k, index_vectors.shape[0]))


def recall_at_k(img: np.ndarray, txt: np.ndarray, txt_image: np.ndarray, ks=KS) -> dict:
    """Recall in percent: IR@k and TR@k for every k, plus their mean `mean_recall` (and `rsum`)."""
    img, txt = _as_f32(img), _as_f32(txt)
    txt_image = np.asarray(txt_image)
    kmax = max(ks)
    _, i2t = search(txt, img, kmax)                       # (n_img, kmax) caption ids
    _, t2i = search(img, txt, kmax)                       # (n_txt, kmax) image ids
    out = {}
    for k in ks:
        out[f"IR@{k}"] = 100.0 * float((t2i[:, :k] == txt_image[:, None]).any(1).mean())
        hit = (txt_image[i2t[:, :k]] == np.arange(len(img))[:, None]).any(1)
        out[f"TR@{k}"] = 100.0 * float(hit.mean())
    vals = [out[f"{d}@{k}"] for d in ("IR", "TR") for k in ks]
    out["rsum"] = float(sum(vals))
    out["mean_recall"] = float(np.mean(vals))
    return out


def recall_brute_force(img: np.ndarray, txt: np.ndarray, txt_image: np.ndarray, ks=KS) -> dict:
    """The same numbers with plain numpy (for checking the FAISS path)."""
    img, txt = _as_f32(img), _as_f32(txt)
    sim = img @ txt.T
    out = {}
    for k in ks:
        top_img = np.argsort(-sim.T, axis=1, kind="stable")[:, :k]
        out[f"IR@{k}"] = 100.0 * float((top_img == txt_image[:, None]).any(1).mean())
        top_txt = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        out[f"TR@{k}"] = 100.0 * float((txt_image[top_txt] == np.arange(len(img))[:, None]).any(1).mean())
    return out
