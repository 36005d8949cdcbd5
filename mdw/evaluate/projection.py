"""The embedding map: real training pairs (clean / flagged / truly noisy) and the distilled pairs,
images and texts, in one shared embedding space (a model's), projected to 2-D once per run.

Library:
  project_run(run_dir, cfg, pcfg=ProjectionConfig(), report=None, force=False) -> meta dict
      computes and writes projection/, or reuses it when its inputs are unchanged (meta["reused"])
  load_projection(run_dir) -> {array name: np.ndarray, ..., "meta": dict}   (the app reads this)
  embed_2d(x, pcfg) -> (coords (n, 2) float32, method)   UMAP | PCA | identity (already ≤ 2-D)
  select_pairs(n, keep, max_pairs, seed) -> sorted indices of the pairs kept

projection/points.npz, one row a point (real pairs: one image and one text point each, the image
point at its image's position; distilled pairs: one image and one text point each):
  x, y          float32 coordinates
  kind          uint8   0 image, 1 text
  source        uint8   0 real, 1 distilled
  pair_id       int64   real: the pair's index in data/pairs.json "pairs"; distilled: the pair it started from
  image_id      int64   real: the pairs.json image shown with the pair; distilled: -1
  distilled_id  int64   distilled: its index in distill/distilled.pt; real: -1
  status        int8    0 clean, 1 flagged (not known noisy), 2 truly noisy (not flagged), 3 flagged and
                        truly noisy; -1 distilled
  flagged       uint8   the DTCL flag of the last epoch (0 where unknown)
  is_noisy      int8    1 / 0, -1 unknown
  consensus     float32 the last epoch's clean score (NaN for distilled points and where unknown)
projection/meta.json: method, model, counts, subsampling, seed, config, the inputs' signature, time.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import RunError
from ..runs.layout import RunLayout
from ..runs.store import atomic_save, atomic_write_json, read_json
from .view_config import ProjectionConfig

STATUS = {"clean": 0, "flagged": 1, "noisy": 2, "flagged_noisy": 3, "distilled": -1}
KIND = {"image": 0, "text": 1}
SOURCE = {"real": 0, "distilled": 1}


# ----- projection ---------------------------------------------------------------------------

def pca_2d(x: np.ndarray) -> np.ndarray:
    """Top two principal components (signs fixed: each axis' largest loading positive)."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(0, keepdims=True)
    if len(x) < 2:
        return np.zeros((len(x), 2), dtype=np.float32)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    vt = vt[:2]
    vt *= np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])[:, None]
    out = xc @ vt.T
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out.astype(np.float32)


def umap_2d(x: np.ndarray, pcfg: ProjectionConfig) -> np.ndarray:
    import umap  # numba JIT on first use: seconds
    n_neighbors = max(2, min(pcfg.n_neighbors, len(x) - 1))
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=pcfg.min_dist, metric=pcfg.metric,
                        random_state=pcfg.seed, n_jobs=1, init="spectral" if len(x) > n_neighbors + 2 else "random")
    return np.asarray(reducer.fit_transform(np.asarray(x, dtype=np.float32)), dtype=np.float32)


def embed_2d(x, pcfg: Optional[ProjectionConfig] = None) -> tuple:
    """(coords (n, 2), method): data already ≤ 2-D is kept as it is; PCA below pcfg.pca_below points
    (or when asked); UMAP otherwise (seeded)."""
    pcfg = pcfg or ProjectionConfig()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embed_2d: expected (n, d) vectors, got shape {x.shape}")
    if x.shape[1] <= 2:
        return np.pad(x, ((0, 0), (0, 2 - x.shape[1]))).astype(np.float32), "identity"
    small = len(x) < max(pcfg.pca_below, 4)
    if pcfg.method == "pca" or (pcfg.method == "auto" and small) or len(x) < 4:
        return pca_2d(x), "pca"
    return umap_2d(x, pcfg), "umap"


def select_pairs(n: int, keep, max_pairs: int, seed: int = 0) -> np.ndarray:
    """All n pairs when n <= max_pairs; else every pair in `keep` plus a seeded random sample of the
    rest up to max_pairs in all (more when `keep` alone is larger). Sorted."""
    if n <= max_pairs:
        return np.arange(n)
    must = np.zeros(n, dtype=bool)
    must[np.asarray(keep, dtype=np.int64)] = True
    rest = np.flatnonzero(~must)
    room = max(0, max_pairs - int(must.sum()))
    extra = np.random.default_rng(seed).choice(rest, size=min(room, len(rest)), replace=False)
    return np.sort(np.concatenate([np.flatnonzero(must), extra]).astype(np.int64))


def status_codes(flagged: np.ndarray, is_noisy: Optional[np.ndarray]) -> np.ndarray:
    flagged = np.asarray(flagged, dtype=bool)
    noisy = np.zeros_like(flagged) if is_noisy is None else (np.asarray(is_noisy) == 1)
    return (flagged.astype(np.int8) + 2 * noisy.astype(np.int8)).astype(np.int8)


# ----- the run's projection -----------------------------------------------------------------

def _twice(a) -> np.ndarray:
    """A per-pair array for the image rows, then the text rows."""
    return np.concatenate([a, a])


def _file_sig(path):
    if not os.path.isfile(path):
        return None
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def signature(run_dir: str, spec: str, pcfg: ProjectionConfig) -> dict:
    """What the projection depends on; an unchanged signature means the stored one is reused."""
    lay = RunLayout(run_dir)
    kind = lay.main_expert_kind()
    return {"model": spec, "config": dict(vars(pcfg)),
            "distilled": _file_sig(lay.distilled),
            "scores": _file_sig(lay.scores(kind)) if kind else None,
            "model_file": _model_file_sig(lay, spec)}


def _model_file_sig(lay: RunLayout, spec: str):
    parts = spec.split(":")
    if parts[0] == "expert":
        return _file_sig(lay.experts(parts[1]).final(parts[2]))
    return _file_sig(lay.eval_student(parts[1], parts[2]))


def points_path(run_dir) -> str:
    """projection/points.npz of a run (written after meta.json is removed, so it may exist alone)."""
    return os.fspath(RunLayout(run_dir).projection_points)


def load_projection(run_dir) -> dict:
    """The stored map: every array of points.npz (see the module docstring) and "meta".
    RunError when points.npz or meta.json is missing."""
    lay = RunLayout(run_dir)
    meta_path, pts = lay.projection_meta, lay.projection_points
    if not (meta_path.is_file() and pts.is_file()):
        raise RunError(f"{run_dir}: no embedding map (missing {lay.projection_dir}/points.npz or meta.json; "
                       "the projection stage writes them)")
    with np.load(pts) as z:
        out = {k: z[k] for k in z.files}
    out["meta"] = read_json(meta_path)
    return out


def _pair_scores(run_dir: str, pair_ids: np.ndarray, is_noisy_data) -> tuple:
    """(flagged (n,) bool, is_noisy (n,) int8 or None, consensus (n,) float32; NaN / unflagged for
    pairs without a score) aligned with pair_ids, from the last epoch's scores of the run's experts
    (RunLayout.main_expert_kind; none yet: nothing flagged)."""
    from ..train.experts_io import load_scores
    n = len(pair_ids)
    flagged, consensus = np.zeros(n, dtype=bool), np.full(n, np.nan, dtype=np.float32)
    is_noisy = None if is_noisy_data is None else np.asarray(is_noisy_data, dtype=np.int8)
    lay = RunLayout(run_dir)
    kind = lay.main_expert_kind()
    if kind is None or not lay.scores(kind).is_file():
        return flagged, is_noisy, consensus
    s = load_scores(run_dir, kind)
    pos = {int(p): i for i, p in enumerate(s["pair_ids"])}
    at = np.array([pos.get(int(p), -1) for p in pair_ids])
    ok = at >= 0
    flagged[ok] = np.asarray(s["flag"][-1])[at[ok]].astype(bool)
    consensus[ok] = np.asarray(s["consensus"][-1], dtype=np.float32)[at[ok]]
    if is_noisy is None and "is_noisy" in s:      # is_noisy: only runs with ground truth have it
        is_noisy = np.full(n, -1, dtype=np.int8)
        is_noisy[ok] = np.asarray(s["is_noisy"])[at[ok]].astype(np.int8)
    return flagged, is_noisy, consensus


@torch.no_grad()
def _embed(model, images_f: Optional[torch.Tensor] = None, images_u8: Optional[torch.Tensor] = None,
           g0: Optional[torch.Tensor] = None, batch: int = 256) -> np.ndarray:
    from ..train.data import to_float_images
    dev, out = model.device, []
    if g0 is not None:
        for i in range(0, len(g0), batch):
            out.append(model.encode_text_g0(g0[i:i + batch].float().to(dev)).float().cpu())
    else:
        src = images_u8 if images_u8 is not None else images_f
        for i in range(0, len(src), batch):
            x = to_float_images(src[i:i + batch], dev) if images_u8 is not None else src[i:i + batch].float().to(dev)
            out.append(model.encode_image(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.embed_dim), np.float32)


def project_run(run_dir: str, cfg, pcfg: Optional[ProjectionConfig] = None, report: Optional[Callable] = None,
                force: bool = False) -> dict:
    """Compute projection/ (or reuse it: same model, config, distilled set and scores files)."""
    from ..distill.synset import DistilledSet
    from ..inputs import run_inputs
    from .index import load_model, resolve_spec

    pcfg = (pcfg or ProjectionConfig()).validate()
    say = report or (lambda f, m="": None)
    spec = resolve_spec(run_dir, pcfg.model)
    sig = signature(run_dir, spec, pcfg)
    lay = RunLayout(run_dir)
    meta_path = lay.projection_meta
    if not force and meta_path.is_file() and lay.projection_points.is_file():
        old = read_json(meta_path)
        if old.get("signature") == sig:
            return {**old, "reused": True}
    t0 = time.time()
    say(0.05, f"projection: loading {spec}")
    model = load_model(run_dir, spec, device=cfg.model.device)
    inp = run_inputs(run_dir, cfg, lambda f, m="": say(0.05 + 0.25 * f, m))
    pairs = inp.pairs
    pair_ids = np.asarray(pairs.pair_ids, dtype=np.int64)
    flagged, is_noisy, consensus = _pair_scores(run_dir, pair_ids, pairs.is_noisy)
    syn = DistilledSet.load(lay.distilled) if lay.distilled.is_file() else None
    m = syn.m if syn is not None else 0
    pos_of = {int(q): i for i, q in enumerate(pair_ids)}
    init_pos = [pos_of[int(q)] for q in (syn.init_pairs if syn is not None else []) if int(q) in pos_of]
    keep = select_pairs(len(pair_ids), np.union1d(np.flatnonzero(flagged), init_pos).astype(np.int64),
                        max(1, (pcfg.max_points - 2 * m) // 2), pcfg.seed)
    say(0.35, f"projection: embedding {len(keep)} pairs and {m} distilled pairs")
    shown = pairs.pair_image[torch.from_numpy(keep)].numpy()
    uniq, inv = np.unique(shown, return_inverse=True)
    vecs = [_embed(model, images_u8=pairs.images[torch.from_numpy(uniq)]),
            _embed(model, g0=pairs.g0[torch.from_numpy(keep)])]
    if syn is not None:
        vecs += [_embed(model, images_f=syn.images.detach().clamp(0, 1)), _embed(model, g0=syn.text.detach())]
    say(0.55, "projection: 2-D map")
    coords, method = embed_2d(np.concatenate(vecs), pcfg)
    nu, nk = len(uniq), len(keep)
    xy = np.concatenate([coords[:nu][inv], coords[nu:nu + nk]] + ([coords[nu + nk:]] if m else []))
    st = status_codes(flagged[keep], None if is_noisy is None else is_noisy[keep])
    arrays = {
        "x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32),
        "kind": np.concatenate([np.zeros(nk), np.ones(nk), np.zeros(m), np.ones(m)]).astype(np.uint8),
        "source": np.concatenate([np.zeros(2 * nk), np.ones(2 * m)]).astype(np.uint8),
        "pair_id": np.concatenate([_twice(pair_ids[keep]),
                                   _twice(syn.init_pairs if m else np.zeros(0))]).astype(np.int64),
        "image_id": np.concatenate([_twice(shown), np.full(2 * m, -1)]).astype(np.int64),
        "distilled_id": np.concatenate([np.full(2 * nk, -1), _twice(np.arange(m))]).astype(np.int64),
        "status": np.concatenate([_twice(st), np.full(2 * m, -1)]).astype(np.int8),
        "flagged": np.concatenate([_twice(flagged[keep]), np.zeros(2 * m)]).astype(np.uint8),
        "is_noisy": np.concatenate([_twice(is_noisy[keep] if is_noisy is not None else np.full(nk, -1)),
                                    np.full(2 * m, -1)]).astype(np.int8),
        "consensus": np.concatenate([_twice(consensus[keep]), np.full(2 * m, np.nan)]).astype(np.float32),
    }
    if os.path.exists(meta_path):
        os.remove(meta_path)  # points.npz and meta.json are replaced together; meta.json last
    atomic_save(lay.projection_points, lambda tmp: np.savez_compressed(tmp, **arrays))
    meta = {"method": method, "model": pcfg.model, "model_resolved": spec, "dim": int(vecs[0].shape[1]),
            "n_points": int(len(xy)), "n_fitted": int(len(coords)), "n_pairs_total": int(len(pair_ids)),
            "n_pairs_kept": int(nk), "n_images_kept": int(nu), "n_distilled": int(m),
            "subsampled": bool(nk < len(pair_ids)), "n_flagged": int(flagged.sum()),
            "seed": pcfg.seed, "status_codes": STATUS, "kind_codes": KIND, "source_codes": SOURCE,
            "seconds": round(time.time() - t0, 2), "signature": sig,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(meta_path, meta, indent=2)
    say(1.0, "projection: done")
    return {**meta, "reused": False}
