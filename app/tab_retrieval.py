"""Retrieval tab: a text or image query against the run's FAISS indexes of the test split (top-K
images or captions with scores), and the recall table of every method in the run with a bar chart."""
from __future__ import annotations

import os

import gradio as gr
import plotly.graph_objects as go

from mdw.errors import MDWError
from mdw.evaluate.index import RunIndex, index_meta_path
from mdw.views.retrieval import RECALL_COLUMNS, example_query, image_answer, recall_table, text_answer

from .components import StableGallery
from .context import AppContext, error_text, message_figure

NO_INDEX = "This run has no retrieval index yet (not computed for this run)."


def load_index(ctx: AppContext, run_id):
    """The run's RunIndex (cached while its meta.json is unchanged), or None when it has none."""
    d = ctx.run_dir(run_id)
    if not RunIndex.exists(d):
        return None
    return ctx.cached(("index", d), os.stat(index_meta_path(d)).st_mtime_ns, lambda: RunIndex.load(d))


def query_text(ctx: AppContext, run_id, text, k, example=False):
    """(gallery [(image, label)], message)."""
    try:
        idx = load_index(ctx, run_id)
        if idx is None:
            return [], NO_INDEX
        if not (text or "").strip():
            return [], "Type a caption to search the test images."
        a = text_answer(idx, ctx.view(run_id), text.strip(), int(k or 5))
    except (MDWError, ValueError, OSError) as e:
        return [], error_text(e)
    gallery = [(h.image, f"#{h.rank} score {h.score:.3f}" + (" · its own image" if h.own else "")) for h in a.hits]
    return gallery, a.summary(example)


def opened(ctx: AppContext, run_id, text, k):
    """(query text, gallery, message): the example query (the split's first caption) answered when the
    box is empty; otherwise what is shown stays."""
    if (text or "").strip():
        return gr.skip(), gr.skip(), gr.skip()
    try:
        idx = load_index(ctx, run_id)
    except (MDWError, OSError) as e:
        return text, [], error_text(e)
    if idx is None:
        return text, [], NO_INDEX
    text = example_query(idx)
    return (text, *query_text(ctx, run_id, text, k, example=True))


def query_image(ctx: AppContext, run_id, image, k):
    try:
        idx = load_index(ctx, run_id)
        if idx is None:
            return [], NO_INDEX
        if image is None:
            return [], "Upload an image to search the test captions."
        hits = image_answer(idx, image, int(k or 5))   # decoded by mdw.data.decode, whatever its form
    except (MDWError, ValueError, OSError) as e:
        return [], error_text(e)
    return [[h.rank, round(h.score, 4), h.caption] for h in hits], f"top {len(hits)} test captions"


def recall_view(ctx: AppContext, run_id):
    """(table rows, bar chart, note) from eval/results.json."""
    try:
        t = recall_table(ctx.distill_view(run_id).results())
    except (MDWError, OSError) as e:
        return [], message_figure(str(e)), error_text(e)
    if not t.rows:
        msg = "This run has no evaluation yet (the evaluate stage writes eval/results.json)."
        return [], message_figure(msg), msg
    fig = go.Figure(go.Bar(x=t.names, y=t.mean, error_y={"type": "data", "array": t.std}))
    fig.update_layout(title="mean of the six recalls (± std over student seeds)", yaxis_title="mean recall (%)",
                      height=320, margin={"t": 40, "b": 80, "l": 50, "r": 10})
    return t.rows, fig, f"{len(t.rows)} methods evaluated"


def build(ctx: AppContext, run_dd: gr.Dropdown) -> gr.Tab:
    with gr.Tab("Retrieval", id="retrieval") as tab:
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="text query", placeholder="a red circle above a blue square", elem_id="ret-text")
                k = gr.Slider(1, 20, value=5, step=1, label="K")
                text_btn = gr.Button("Search images", size="sm")
                text_msg = gr.Markdown(elem_id="ret-text-msg")
                gallery = StableGallery(label="top images", columns=5, height=240, allow_preview=False,
                                     elem_id="ret-gallery")
            with gr.Column():
                # the upload's own file (image_mode=None: gradio leaves it as it is), decoded by
                # mdw.data.decode like every image of the product (EXIF orientation, 16-bit, alpha)
                image = gr.Image(label="image query", type="filepath", image_mode=None, height=180)
                image_btn = gr.Button("Search captions", size="sm")
                image_msg = gr.Markdown()
                captions = gr.Dataframe(headers=["rank", "score", "caption"], interactive=False)
        note = gr.Markdown(elem_id="ret-note")
        table = gr.Dataframe(headers=list(RECALL_COLUMNS), interactive=False,
                             label="recall of every method in the run (%)", elem_id="ret-table")
        bar = gr.Plot(label="mean recall")

    gr.on([tab.select, run_dd.change], lambda r: recall_view(ctx, r), [run_dd], [table, bar, note],
          api_name="recall_table")
    tab.select(lambda r, t, kk: opened(ctx, r, t, kk), [run_dd, text, k], [text, gallery, text_msg], api_name=False)
    run_dd.change(lambda r, kk: opened(ctx, r, "", kk), [run_dd, k], [text, gallery, text_msg],
                  api_name="retrieval_open")
    gr.on([text_btn.click, text.submit], lambda r, t, kk: query_text(ctx, r, t, kk), [run_dd, text, k],
          [gallery, text_msg], api_name="query_text")
    image_btn.click(lambda r, im, kk: query_image(ctx, r, im, kk), [run_dd, image, k], [captions, image_msg],
                    api_name="query_image")
    return tab
