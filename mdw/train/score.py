"""Score any (image, caption) pairs with a run's experts: similarity and clean probability.

A new pair's loss is its symmetric InfoNCE against a fixed reference batch of trusted training
pairs (kept with the experts, `experts/<kind>/reference.pt`), the same kind of loss the GMM was fit
on at the last epoch; the stored GMM turns it into a clean probability per track.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..csvio import write_csv
from ..data.decode import read_square
from ..data.tables import read_table
from ..models.text_context import describe_cut
from ..runs.layout import RunLayout
from ..runs.store import atomic_save
from .data import PairTensors, to_float_images
from .experts_io import experts_meta, load_expert
from .gmm import LossGMM


def save_reference(pairs: PairTensors, consensus: np.ndarray, run_dir: str, kind: str, size: int, seed: int = 0) -> None:
    """Keep `size` training pairs the experts trust most-likely-clean, as the scoring reference."""
    trusted = np.flatnonzero(consensus >= 0.5)
    pool = trusted if len(trusted) >= size else np.argsort(-consensus)[:size]
    pick = np.sort(np.random.default_rng(seed).choice(pool, size=min(size, len(pool)), replace=False))
    idx = torch.from_numpy(pick)
    ref = {"images": pairs.images[pairs.pair_image[idx]].clone(), "g0": pairs.g0[idx].clone(),
           "pair_ids": torch.from_numpy(pairs.pair_ids[pick])}
    atomic_save(RunLayout(run_dir).experts(kind).reference, lambda tmp: torch.save(ref, tmp))


@torch.no_grad()
def pair_losses(model, images: torch.Tensor, g0: torch.Tensor, ref: dict) -> tuple:
    """(loss, similarity) of each pair (images[i], g0[i]) against the reference batch."""
    dev = model.device
    img = model.encode_image(to_float_images(images, dev)).float()
    txt = model.encode_text_g0(g0.to(dev)).float()
    r_img = model.encode_image(to_float_images(ref["images"], dev)).float()
    r_txt = model.encode_text_g0(ref["g0"].to(dev)).float()
    scale = model.scale().float()
    pos = (img * txt).sum(1)
    row = torch.cat([pos[:, None], img @ r_txt.t()], 1) * scale        # image -> [own text, reference texts]
    col = torch.cat([pos[:, None], txt @ r_img.t()], 1) * scale        # text -> [own image, reference images]
    target = torch.zeros(len(pos), dtype=torch.long, device=dev)
    loss = 0.5 * (F.cross_entropy(row, target, reduction="none") + F.cross_entropy(col, target, reduction="none"))
    return loss.cpu().numpy(), pos.cpu().numpy()


def score_pairs(run_dir: str, image_paths: Sequence[str], captions: Sequence[str], kind: str = "dtcl",
                batch_size: int = 256) -> dict:
    """Per pair: similarity and clean probability under each track, their means, the flag, and how
    much of the caption the text encoder read.

    image_paths: image files (decoded by mdw.data.decode.read_square; DataError naming a file that
    is missing or unreadable); captions: one per image. Returns arrays of shape (N,): similarity_<t>,
    loss_<t>, clean_<t> (float, per track t), similarity, clean (float, track means), flagged (int
    0/1), words_encoded, words_total (int: the first words_encoded of the caption's words_total
    whitespace words fit the text encoder's context; the rest were cut, mdw.models.text_context)."""
    meta = experts_meta(run_dir, kind)
    ref = torch.load(RunLayout(run_dir).experts(kind).reference, map_location="cpu")
    size = meta["image_size"]
    images = [read_square(p, size) for p in image_paths]
    images = torch.from_numpy(np.stack(images)) if images else torch.zeros((0, size, size, 3), dtype=torch.uint8)
    out: dict = {}
    g0 = None
    for t in meta["tracks"]:
        model = load_expert(run_dir, kind, t)
        if g0 is None:
            g0 = model.text.encode_g0(list(captions)).float().cpu()
            fits = model.text.text_context().fit(list(captions))
            out["words_encoded"] = np.array([f.encoded for f in fits], dtype=np.int64)
            out["words_total"] = np.array([f.total for f in fits], dtype=np.int64)
        losses, sims = [], []
        for i in range(0, len(captions), batch_size):
            l, s = pair_losses(model, images[i:i + batch_size], g0[i:i + batch_size], ref)
            losses.append(l)
            sims.append(s)
        loss, sim = np.concatenate(losses) if losses else np.zeros(0), np.concatenate(sims) if sims else np.zeros(0)
        out[f"similarity_{t}"] = sim
        out[f"loss_{t}"] = loss
        out[f"clean_{t}"] = LossGMM.from_dict(meta["gmm"][t]).posterior(loss) if len(loss) else loss
    out["similarity"] = np.mean([out[f"similarity_{t}"] for t in meta["tracks"]], axis=0)
    out["clean"] = np.mean([out[f"clean_{t}"] for t in meta["tracks"]], axis=0)
    out["flagged"] = (out["clean"] < meta["flag_threshold"]).astype(int)
    return out


def score_file(run_dir: str, pairs_file: str, out_csv: str, image_root: str = "", kind: str = "dtcl") -> int:
    """Read (image, caption) rows from a CSV/TSV/JSONL file, score them, write a CSV; rows written.

    out_csv columns: image, caption (text, escaped against spreadsheet formulas by mdw/csvio.py,
    read back unescaped by read_table), similarity, clean, flagged (0/1) and per track
    similarity_<t>, clean_<t> (numbers with 6 decimals, never escaped), words_encoded, words_total
    (integers: the caption was cut to the text encoder's context when words_encoded < words_total;
    how many were cut is printed). DataError as read_table."""
    ps = read_table(pairs_file, image_root=image_root, max_skip_fraction=0.0)
    paths = [ps.images.path(int(i)) for i in ps.pair_image]
    s = score_pairs(run_dir, paths, ps.captions, kind)
    tracks = experts_meta(run_dir, kind)["tracks"]
    cols = (["similarity", "clean", "flagged"] + [f"{m}_{t}" for t in tracks for m in ("similarity", "clean")]
            + ["words_encoded", "words_total"])
    ints = {"flagged", "words_encoded", "words_total"}
    rows = ([ps.images.key(int(ps.pair_image[n])), ps.captions[n]] +
            [int(s[c][n]) if c in ints else float(s[c][n]) for c in cols] for n in range(len(paths)))
    write_csv(out_csv, ["image", "caption"] + cols, rows, float_format=".6f")  # text cells escaped (csvio)
    if ps.skipped:
        print("skipped: " + ", ".join(f"{k}: {v}" for k, v in ps.skipped.items()))
    cut = describe_cut(int((s["words_encoded"] < s["words_total"]).sum()), len(paths))
    if cut:
        print(f"note: {cut} (see the columns words_encoded, words_total)")
    return len(paths)
