"""Correspondence tab: per-word heatmaps of a picked real or distilled pair, P̃ as a plotly heatmap
with hover, and a distilled image's top-k matching texts."""
from __future__ import annotations

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from mdw.errors import MDWError
from mdw.heatmaps.render import resize_image, word_grid

from .components import StableImage
from .context import AppContext, error_text, message_figure

GROUP_LABEL = {"most_trusted": "real, most trusted", "least_trusted": "real, least trusted", "app": "real, from the app",
               "distilled": "distilled"}


def item_choices(ctx: AppContext, run_id):
    """Dropdown update listing the stored heatmap items of the run."""
    try:
        items = ctx.view(run_id).heatmap_items()
    except (MDWError, OSError):
        items = []
    choices = [(f"{GROUP_LABEL.get(it['group'], it['group'])} #{it['item_id']}: {it['caption'][:70]}", int(it["row"]))
               for it in items]
    return gr.update(choices=choices, value=choices[0][1] if choices else None)


def show_item(ctx: AppContext, run_id, row):
    if row is None or row == "":
        return None, "This run has no stored heatmaps yet (the heatmaps stage writes them)."
    try:
        item = ctx.view(run_id).heatmap_item(int(row))
    except (MDWError, OSError, IndexError, ValueError, TypeError) as e:
        return None, error_text(e)
    kind = "distilled pair" if item.group == "distilled" else "real pair"
    noisy = {1: "noisy (injected)", 0: "clean", -1: "unknown"}.get(item.is_noisy, "unknown")
    return (word_grid(item.image, item.maps, tile=112),
            f"**{kind} {item.item_id}**: “{item.maps.caption}”; s(v, t) = {item.maps.pair_score:.3f}; "
            f"ground truth: {noisy}" + (f"\n\n⚠️ {item.maps.cut_note()}" if item.maps.cut else ""))


def compute_for_pair(ctx: AppContext, run_id, pair):
    """Compute (or find) the word maps of a real pair; select it in the item list."""
    try:
        row = ctx.view(run_id).compute_pair_heatmap(pair)
    except (MDWError, ValueError, OSError) as e:
        return gr.skip(), error_text(e)
    upd = item_choices(ctx, run_id)
    upd["value"] = row
    return upd, f"heatmaps of real pair {int(pair)} ready"


def p_figure(ctx: AppContext, run_id):
    try:
        dv = ctx.distill_view(run_id)
        pm = dv.p_matrix()
    except (MDWError, OSError) as e:
        return message_figure(str(e))
    if pm is None:
        return message_figure("This run has no distilled set yet (the distill stage writes it).")
    m = pm.shape[0]
    # the column labels carry the decoded captions, so hovering needs no per-cell text (a 100 × 100
    # P̃ with a label per cell was ~1 MB to send and draw; this is ~10× less)
    labels = [f"{j}: {dv.text_label(j)[:50]}" for j in range(m)]
    fig = go.Figure(go.Heatmap(z=np.round(pm, 3), x=labels, y=list(range(m)), colorscale="Viridis", zmin=0, zmax=1,
                               hovertemplate="image %{y} ↔ text %{x}<br>P̃ = %{z:.3f}<extra></extra>"))
    fig.update_layout(title="P̃: distilled image (row) × distilled text (column)", xaxis_title="text",
                      xaxis_showticklabels=False,
                      yaxis_title="image", yaxis_autorange="reversed", height=460,
                      margin={"t": 40, "b": 40, "l": 50, "r": 10})
    return fig


def top_matches(ctx: AppContext, run_id, index, k):
    """(distilled image, table of its top-k texts, note)."""
    try:
        dv = ctx.distill_view(run_id)
        if dv.distilled() is None:
            return None, [], "This run has no distilled set yet."
        i = dv.check_index(index)
        rows = dv.top_matches(i, int(k or 5))
        img = resize_image(dv.distilled().images_u8()[i], 192)
    except (MDWError, ValueError, OSError) as e:
        return None, [], error_text(e)
    table = [[r["text"], r["p"], r["caption"]] for r in rows]
    return img, table, f"distilled image {i}: the texts P̃ matches it with, best first"


def build(ctx: AppContext, run_dd: gr.Dropdown) -> gr.Tab:
    with gr.Tab("Correspondence", id="correspondence") as tab:
        with gr.Row():
            with gr.Column(scale=3):
                item = gr.Dropdown(choices=[], label="pair with heatmaps (real or distilled)", elem_id="corr-item",
                                   allow_custom_value=True)
                with gr.Row():
                    pair = gr.Number(value=None, precision=0, label="or any real pair id", scale=2)
                    pair_btn = gr.Button("Compute its heatmaps", size="sm", scale=1)
                note = gr.Markdown(elem_id="corr-note")
                grid = StableImage(label="per-word heatmaps", interactive=False)
            with gr.Column(scale=2):
                index = gr.Number(value=0, precision=0, label="distilled image", elem_id="corr-index")
                k = gr.Slider(1, 10, value=5, step=1, label="top k")
                syn_img = StableImage(label="distilled image", height=200, interactive=False)
                match_note = gr.Markdown()
                matches = gr.Dataframe(headers=["text", "P̃", "nearest real caption of the text"], interactive=False,
                                       elem_id="corr-matches")
        pfig = gr.Plot(label="P̃", elem_id="corr-p")

    gr.on([run_dd.change], lambda r: item_choices(ctx, r), [run_dd], [item], api_name=False)
    pair_btn.click(lambda r, p: compute_for_pair(ctx, r, p), [run_dd, pair], [item, note], api_name="corr_compute")
    item.change(lambda r, row: show_item(ctx, r, row), [run_dd, item], [grid, note], api_name="corr_item")
    gr.on([run_dd.change], lambda r: p_figure(ctx, r), [run_dd], [pfig], api_name="corr_p")
    gr.on([run_dd.change, index.change, k.release], lambda r, i, kk: top_matches(ctx, r, i, kk),
          [run_dd, index, k], [syn_img, matches, match_note], api_name="corr_matches")
    # opening the tab is one event, not three (each event costs a round trip and a queue slot)
    tab.select(lambda r, i, kk: (item_choices(ctx, r), p_figure(ctx, r), *top_matches(ctx, r, i, kk)),
               [run_dd, index, k], [item, pfig, syn_img, matches, match_note], api_name=False)
    return tab
