"""Retrieval tab: a text or image query against the run's FAISS indexes of the test split (top-K
images or captions with scores), and the recall table of every method in the run with a bar chart."""
from __future__ import annotations

import os

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from mdw.errors import MDWError

from .context import AppContext, error_text, message_figure

RECALL_KEYS = ["IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10", "mean_recall"]
NO_INDEX = "This run has no retrieval index yet (not computed for this run)."


def load_index(ctx: AppContext, run_id):
    """The run's RunIndex, or None when the library or the run has none."""
    d = ctx.run_dir(run_id)
    try:
        from mdw.evaluate.index import RunIndex
    except ImportError:
        return None
    meta = os.path.join(d, "index", "meta.json")
    if not os.path.isfile(meta):
        return None
    try:
        return ctx.cached(("index", d), os.stat(meta).st_mtime_ns, lambda: RunIndex.load(d))
    except (FileNotFoundError, OSError, MDWError):
        return None


def _hits(res) -> list:
    """Normalise a query result to a list of dicts (each with at least "score")."""
    if isinstance(res, dict) and "scores" in res:
        keys = [k for k, v in res.items() if isinstance(v, (list, tuple, np.ndarray))]
        return [{k: res[k][i] for k in keys} | {"score": res["scores"][i]} for i in range(len(res["scores"]))]
    if isinstance(res, tuple) and len(res) == 2:
        ids, scores = res
        return [{"id": int(i), "score": float(s)} for i, s in zip(np.ravel(ids), np.ravel(scores))]
    return [dict(r) if isinstance(r, dict) else {"id": getattr(r, "id", None), "score": getattr(r, "score", None),
                                                 **getattr(r, "__dict__", {})} for r in res]


def _hit_image(ctx: AppContext, run_id, idx, h):
    if isinstance(h.get("image"), np.ndarray):
        return h["image"]
    if isinstance(h.get("image"), (int, np.integer)) and hasattr(idx, "image_u8"):
        try:
            img = idx.image_u8(int(h["image"]))
            if img is not None:
                return np.asarray(img)
        except (MDWError, IndexError, ValueError, TypeError):
            pass
    v = ctx.view(run_id)
    for key in ("pair", "pair_id"):
        if h.get(key) is not None:
            return v.pair_image(int(h[key]))
    for key in ("image_index", "image_id", "id", "index"):
        if h.get(key) is not None:
            return v.images()[int(h[key])]
    return None


def query_text(ctx: AppContext, run_id, text, k):
    try:
        idx = load_index(ctx, run_id)
        if idx is None:
            return [], NO_INDEX
        if not (text or "").strip():
            return [], "Type a caption to search the test images."
        hits = _hits(idx.query_text(text.strip(), int(k or 5)))
        gallery = [(_hit_image(ctx, run_id, idx, h), f"score {float(h['score']):.3f}") for h in hits]
    except (MDWError, ValueError, OSError) as e:
        return [], error_text(e)
    return [g for g in gallery if g[0] is not None], f"top {len(gallery)} test images for “{text.strip()}”"


def query_image(ctx: AppContext, run_id, image, k):
    try:
        idx = load_index(ctx, run_id)
        if idx is None:
            return [], NO_INDEX
        if image is None:
            return [], "Upload an image to search the test captions."
        hits = _hits(idx.query_image(image, int(k or 5)))   # decoded by mdw.data.decode, whatever its form
    except (MDWError, ValueError, OSError) as e:
        return [], error_text(e)
    return [[i + 1, round(float(h["score"]), 4), h.get("caption", h.get("text", h.get("id")))]
            for i, h in enumerate(hits)], f"top {len(hits)} test captions"


def recall_table(ctx: AppContext, run_id):
    """(table rows, bar chart, note) from eval/results.json."""
    try:
        rows = ctx.distill_view(run_id).results()
    except (MDWError, OSError) as e:
        return [], message_figure(str(e)), error_text(e)
    if not rows:
        msg = "This run has no evaluation yet (the evaluate stage writes eval/results.json)."
        return [], message_figure(msg), msg
    table = [[r.get("method"), r.get("M"), r.get("arch"), r.get("seeds")]
             + [round(float(r[k]), 2) if isinstance(r.get(k), (int, float)) else "" for k in RECALL_KEYS] for r in rows]
    names = [f"{r.get('method')} ({r.get('arch')}, M={r.get('M')})" for r in rows]
    fig = go.Figure(go.Bar(x=names, y=[r.get("mean_recall", 0) for r in rows],
                           error_y={"type": "data", "array": [r.get("mean_recall_std", 0) for r in rows]}))
    fig.update_layout(title="mean of the six recalls (± std over student seeds)", yaxis_title="mean recall (%)",
                      height=320, margin={"t": 40, "b": 80, "l": 50, "r": 10})
    return table, fig, f"{len(rows)} methods evaluated"


def build(ctx: AppContext, run_dd: gr.Dropdown) -> gr.Tab:
    with gr.Tab("Retrieval", id="retrieval") as tab:
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="text query", placeholder="a red circle above a blue square", elem_id="ret-text")
                k = gr.Slider(1, 20, value=5, step=1, label="K")
                text_btn = gr.Button("Search images", size="sm")
                text_msg = gr.Markdown(elem_id="ret-text-msg")
                gallery = gr.Gallery(label="top images", columns=5, height=240, allow_preview=False)
            with gr.Column():
                # the upload's own file (image_mode=None: gradio leaves it as it is), decoded by
                # mdw.data.decode like every image of the product (EXIF orientation, 16-bit, alpha)
                image = gr.Image(label="image query", type="filepath", image_mode=None, height=180)
                image_btn = gr.Button("Search captions", size="sm")
                image_msg = gr.Markdown()
                captions = gr.Dataframe(headers=["rank", "score", "caption"], interactive=False)
        note = gr.Markdown(elem_id="ret-note")
        table = gr.Dataframe(headers=["method", "M", "arch", "seeds"] + RECALL_KEYS, interactive=False,
                             label="recall of every method in the run (%)", elem_id="ret-table")
        bar = gr.Plot(label="mean recall")

    gr.on([tab.select, run_dd.change], lambda r: recall_table(ctx, r), [run_dd], [table, bar, note],
          api_name="recall_table")
    gr.on([text_btn.click, text.submit], lambda r, t, kk: query_text(ctx, r, t, kk), [run_dd, text, k],
          [gallery, text_msg], api_name="query_text")
    image_btn.click(lambda r, im, kk: query_image(ctx, r, im, kk), [run_dd, image, k], [captions, image_msg],
                    api_name="query_image")
    return tab
