"""Embedding map tab: the 2-D map of real (clean / flagged / truly noisy) and distilled points, the
images and the texts side by side in the one shared space, in a colour-blind-safe palette with the
distilled points drawn last, larger and labelled with their index (mdw.views.embedding). gr.Plot
emits no click events, so a point is picked in the linked table; the sample panel opens on the first
distilled point."""
from __future__ import annotations

import os

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from mdw.errors import MDWError
from mdw.evaluate.projection import points_path
from mdw.heatmaps.render import resize_image
from mdw.views.embedding import (KINDS, SOURCES, STATUS_NAMES, embedding_map, first_distilled_point, load_points,
                                 point_rows, point_sample, projection_caption)

from .components import StableImage
from .context import AppContext, error_text, message_figure

NO_PROJECTION = "This run has no embedding map yet (no projection computed for this run)."
COLS = ["point", "kind", "source", "item", "status"]
STATUSES = list(STATUS_NAMES.values())


def points(ctx: AppContext, run_id):
    """The run's named Points (cached while points.npz is unchanged), or None."""
    d = ctx.run_dir(run_id)
    path = points_path(d)
    if not os.path.isfile(path):
        return None
    return ctx.cached(("points", d), os.stat(path).st_mtime_ns, lambda: load_points(d))


def _figure(view, pts, picked) -> go.Figure:
    fig = go.Figure()
    for layer in view.layers:
        text = {"text": layer.labels, "textposition": "top center", "mode": "markers+text",
                "textfont": {"size": 12, "color": layer.colour}} if layer.labels else {"mode": "markers"}
        outline = {"line": {"width": 1.5, "color": "white"}} if layer.labels else {}
        fig.add_trace(go.Scattergl(
            x=layer.x.round(3), y=layer.y.round(3), name=layer.name,
            customdata=np.stack([layer.points, layer.item], 1),   # numbers, not a hover string a point
            hovertemplate="point %{customdata[0]} · item %{customdata[1]}<extra>%{fullData.name}</extra>",
            marker={"size": layer.size, "color": layer.colour, "opacity": layer.opacity, **outline}, **text))
    if picked is not None and 0 <= int(picked) < len(pts) and pts.kind[int(picked)] == view.kind:
        i = int(picked)
        fig.add_trace(go.Scatter(x=[pts.x[i]], y=[pts.y[i]], mode="markers", name=f"picked {i}",
                                 marker={"size": 22, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": "#0072B2"}}))
    fig.update_layout(title=f"{view.kind}s", height=480, margin={"t": 40, "b": 20, "l": 20, "r": 10},
                      legend={"orientation": "h", "y": -0.05}, plot_bgcolor="white",
                      xaxis={"showgrid": False, "zeroline": False}, yaxis={"showgrid": False, "zeroline": False})
    return fig


def figure(ctx: AppContext, run_id, sources, statuses, picked=None):
    """(image map, text map, table rows, note)."""
    try:
        pts = points(ctx, run_id)
    except (MDWError, OSError) as e:
        return message_figure(str(e)), message_figure(""), [], error_text(e)
    if pts is None:
        return message_figure(NO_PROJECTION), message_figure(NO_PROJECTION), [], NO_PROJECTION
    views = [embedding_map(pts, k, statuses or [], sources or []) for k in KINDS]
    note = projection_caption(pts.meta) + ". " + "; ".join(v.note() for v in views) + (
        ". Distilled points are the large black ones, labelled with their index; both maps share one space.")
    return (*(_figure(v, pts, picked) for v in views), point_rows(pts, views), note)


def opened(ctx: AppContext, run_id, sources, statuses, picked):
    """figure(...) plus the picked point: the first distilled point unless one is picked, and its sample."""
    try:
        pts = points(ctx, run_id)
        first = picked if picked is not None else (first_distilled_point(pts) if pts is not None else None)
    except (MDWError, OSError):
        first = None
    return (*figure(ctx, run_id, sources, statuses, first), first, *show_point(ctx, run_id, first))


def show_point(ctx: AppContext, run_id, point):
    """(image, text) of a picked point: the real pair, or the distilled pair."""
    if point is None or point == "":
        return None, "Pick a point in the table."
    try:
        pts = points(ctx, run_id)
        if pts is None:
            return None, NO_PROJECTION
        s = point_sample(ctx.view(run_id), ctx.distill_view(run_id), pts, point)
    except (MDWError, ValueError, OSError, TypeError) as e:
        return None, error_text(e)
    return resize_image(s.image, 192), s.text


def build(ctx: AppContext, run_dd: gr.Dropdown) -> gr.Tab:
    with gr.Tab("Embedding map", id="embedding") as tab:
        with gr.Row():
            sources = gr.CheckboxGroup(list(SOURCES), value=list(SOURCES), label="source")
            statuses = gr.CheckboxGroup(STATUSES, value=STATUSES, label="status")
        note = gr.Markdown(elem_id="emb-note")
        with gr.Row():
            img_plot = gr.Plot(label="images", show_label=False, elem_id="emb-images")
            txt_plot = gr.Plot(label="texts", show_label=False, elem_id="emb-texts")
        with gr.Row():
            table = gr.Dataframe(headers=COLS, interactive=False, label="points (click one; distilled first)",
                                 max_height=300)
            with gr.Column():
                picked = gr.Number(value=None, precision=0, label="picked point", elem_id="emb-picked")
                image = StableImage(label="sample", height=200, interactive=False, elem_id="emb-sample")
                text = gr.Markdown(elem_id="emb-sample-text")

    controls = [run_dd, sources, statuses]
    maps = [img_plot, txt_plot, table, note]
    gr.on([sources.change, statuses.change], lambda r, s, st, p: figure(ctx, r, s, st, p), controls + [picked], maps,
          api_name="embedding_map")
    tab.select(lambda *a: opened(ctx, *a), controls + [picked], maps + [picked, image, text], api_name=False)
    run_dd.change(lambda r, s, st: opened(ctx, r, s, st, None), controls, maps + [picked, image, text],
                  api_name="embedding_open")

    def from_table(evt: gr.SelectData):
        return int(evt.row_value[0]) if evt.row_value else gr.skip()

    def pick(r, s, st, p):
        return (*figure(ctx, r, s, st, p)[:2], *show_point(ctx, r, p))

    table.select(from_table, None, [picked], api_name=False).then(
        pick, controls + [picked], [img_plot, txt_plot, image, text], api_name=False)
    picked.submit(pick, controls + [picked], [img_plot, txt_plot, image, text], api_name="embedding_point")
    return tab
