"""Embedding map tab: the UMAP scatter of real (clean / flagged / truly noisy) and distilled points,
images and texts, with colour and filter controls. gr.Plot emits no click events, so a point is
picked in the linked table; it is highlighted in the figure and its sample shown."""
from __future__ import annotations

import os

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from mdw.errors import MDWError
from mdw.heatmaps.render import resize_image

from .context import AppContext, error_text, message_figure

NO_PROJECTION = "This run has no embedding map yet (no projection computed for this run)."
COLOUR_BY = ["status", "source", "kind"]
COLS = ["point", "kind", "source", "pair", "status"]
STATUS_CODES = {"clean": 0, "flagged": 1, "noisy (missed)": 2, "noisy (flagged)": 3, "distilled": -1}


def _names(codes, table: dict) -> np.ndarray:
    """Numeric codes (projection.py's KIND / SOURCE / STATUS) as names; strings pass through."""
    codes = np.asarray(codes)
    if codes.dtype.kind in "iub":
        inv = {v: k for k, v in table.items()}
        return np.array([inv.get(int(c), str(c)) for c in codes], dtype=object).astype(str)
    return codes.astype(str)


def load_points(ctx: AppContext, run_id) -> dict | None:
    """The projection as {x, y, kind, source, status (names), pair, item} arrays, or None.
    item: the real pair id, or the distilled index of a distilled point."""
    d = ctx.run_dir(run_id)
    path = os.path.join(d, "projection", "points.npz")
    if not os.path.isfile(path):
        return None
    return ctx.cached(("points", d), os.stat(path).st_mtime_ns, lambda: _read_points(d))


def _read_points(d: str) -> dict | None:
    try:
        from mdw.evaluate.projection import load_projection
        p = load_projection(d)
    except (ImportError, FileNotFoundError, OSError, MDWError):
        return None
    n = len(p["x"])
    out = {"x": np.asarray(p["x"], float), "y": np.asarray(p["y"], float),
           "kind": _names(p.get("kind", np.zeros(n, int)), {"image": 0, "text": 1}),
           "source": _names(p.get("source", np.zeros(n, int)), {"real": 0, "distilled": 1}),
           "status": _names(p.get("status", np.zeros(n, int)), STATUS_CODES),
           "pair": np.asarray(p.get("pair_id", np.full(n, -1)), dtype=np.int64)}
    dist = np.asarray(p.get("distilled_id", np.full(n, -1)), dtype=np.int64)
    out["item"] = np.where(out["source"] == "distilled", dist, out["pair"])
    return out


def _keep(pts: dict, kinds, sources, statuses) -> np.ndarray:
    return np.flatnonzero(np.isin(pts["kind"], kinds or []) & np.isin(pts["source"], sources or [])
                          & np.isin(pts["status"], statuses or []))


def figure(ctx: AppContext, run_id, colour, kinds, sources, statuses, picked=None):
    """(figure, table rows, note). Without a picked point, the last one made for the run is reused
    while the projection file and the controls are unchanged: building the traces of tens of
    thousands of points (plotly validates every hover text and symbol) takes seconds."""
    try:
        pts = load_points(ctx, run_id)
    except (MDWError, OSError) as e:
        return message_figure(str(e)), [], error_text(e)
    if pts is None:
        return message_figure(NO_PROJECTION), [], NO_PROJECTION
    if picked is None:
        d = ctx.run_dir(run_id)
        stamp = (os.stat(os.path.join(d, "projection", "points.npz")).st_mtime_ns, colour,
                 tuple(kinds or []), tuple(sources or []), tuple(statuses or []))
        return ctx.cached(("embedding-figure", d), stamp,
                          lambda: _figure(pts, colour, kinds, sources, statuses, None))
    return _figure(pts, colour, kinds, sources, statuses, picked)


def _figure(pts: dict, colour, kinds, sources, statuses, picked):
    idx = _keep(pts, kinds, sources, statuses)
    fig = go.Figure()
    for value in sorted(set(pts[colour][idx].tolist())):
        sel = idx[pts[colour][idx] == value]
        # numbers, not a text per point: 50,000 hover strings were most of a 5 MB figure
        custom = np.stack([sel, np.asarray(pts["item"])[sel]], 1)
        symbols = np.where(np.asarray(pts["kind"])[sel] == "image", 0, 2)     # 0 circle, 2 diamond
        fig.add_trace(go.Scattergl(x=np.round(pts["x"][sel], 3), y=np.round(pts["y"][sel], 3), mode="markers",
                                   name=str(value), customdata=custom,
                                   hovertemplate="point %{customdata[0]} · item %{customdata[1]}<extra>%{fullData.name}</extra>",
                                   marker={"size": 6, "symbol": symbols, "opacity": 0.75}))
    if picked is not None and 0 <= int(picked) < len(pts["x"]):
        i = int(picked)
        fig.add_trace(go.Scatter(x=[pts["x"][i]], y=[pts["y"][i]], mode="markers", name=f"picked {i}",
                                 marker={"size": 18, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": "red"}}))
    fig.update_layout(height=520, margin={"t": 20, "b": 20, "l": 20, "r": 10}, legend_title=colour)
    table = [[int(i), pts["kind"][i], pts["source"][i], int(pts["item"][i]), pts["status"][i]] for i in idx[:500]]
    return fig, table, f"{len(idx)} of {len(pts['x'])} points shown (circles: images, diamonds: texts)"


def show_point(ctx: AppContext, run_id, point):
    """(image, text) of a picked point: the real pair, or the distilled pair."""
    try:
        pts = load_points(ctx, run_id)
        if pts is None:
            return None, NO_PROJECTION
        i = int(point)
        if not 0 <= i < len(pts["x"]):
            return None, f"no point {i}"
        pair = int(pts["item"][i])
        if pts["source"][i] == "distilled":
            dv = ctx.distill_view(run_id)
            j = dv.check_index(pair)
            return resize_image(dv.distilled().images_u8()[j], 192), f"distilled pair {j}: “{dv.text_label(j)}”"
        v = ctx.view(run_id)
        return resize_image(v.pair_image(pair), 192), f"real pair {pair} ({pts['status'][i]}): “{v.caption(pair)}”"
    except (MDWError, ValueError, OSError, TypeError) as e:
        return None, error_text(e)


def build(ctx: AppContext, run_dd: gr.Dropdown) -> gr.Tab:
    with gr.Tab("Embedding map", id="embedding") as tab:
        with gr.Row():
            colour = gr.Radio(COLOUR_BY, value="status", label="colour by")
            kinds = gr.CheckboxGroup(["image", "text"], value=["image", "text"], label="points")
            sources = gr.CheckboxGroup(["real", "distilled"], value=["real", "distilled"], label="source")
            statuses = gr.CheckboxGroup(list(STATUS_CODES), value=list(STATUS_CODES), label="status")
        note = gr.Markdown(elem_id="emb-note")
        plot = gr.Plot(label="UMAP", elem_id="emb-plot")
        with gr.Row():
            table = gr.Dataframe(headers=COLS, interactive=False, label="points (click one)", max_height=300)
            with gr.Column():
                picked = gr.Number(value=None, precision=0, label="picked point")
                image = gr.Image(label="sample", height=200, interactive=False)
                text = gr.Markdown()

    controls = [run_dd, colour, kinds, sources, statuses]
    gr.on([tab.select, run_dd.change, colour.change, kinds.change, sources.change, statuses.change],
          lambda *a: figure(ctx, *a), controls, [plot, table, note], api_name="embedding_map")

    def from_table(evt: gr.SelectData):
        return int(evt.row_value[0]) if evt.row_value else gr.skip()

    table.select(from_table, None, [picked], api_name=False)
    picked.change(lambda r, c, k, s, st, p: figure(ctx, r, c, k, s, st, p)[0], controls + [picked], [plot],
                  api_name=False)
    picked.change(lambda r, p: show_point(ctx, r, p), [run_dd, picked], [image, text], api_name="embedding_point")
    return tab
