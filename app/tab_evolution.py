"""Evolution tab: a slider over the distillation snapshots, the grid of synthetic images at that
iteration, each image's change from its initialisation, the L_TM curve and a GIF export."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from mdw.errors import MDWError
from mdw.runs.view_distill import image_grid

from .context import AppContext, error_text, message_figure

NO_SNAPSHOTS = "This run has no distillation snapshots yet (the distill stage writes them)."


def slider_update(ctx: AppContext, run_id):
    try:
        its = ctx.distill_view(run_id).snapshot_iterations()
    except (MDWError, OSError):
        its = []
    if not its:
        return gr.update(minimum=0, maximum=1, value=0), NO_SNAPSHOTS
    return (gr.update(minimum=0, maximum=max(len(its) - 1, 1), value=len(its) - 1, step=1),
            f"{len(its)} snapshots: iterations {', '.join(map(str, its))}")


def show_snapshot(ctx: AppContext, run_id, pos):
    """(grid at the snapshot, change-map grid, change bar chart, caption)."""
    try:
        dv = ctx.distill_view(run_id)
        its = dv.snapshot_iterations()
        if not its:
            return None, None, message_figure(NO_SNAPSHOTS), NO_SNAPSHOTS
        it = its[max(0, min(int(pos or 0), len(its) - 1))]
        imgs = dv.snapshot_images(it)
        per, maps = dv.change_from_start(it)
    except (MDWError, ValueError, OSError) as e:
        return None, None, message_figure(str(e)), error_text(e)
    cols = min(10, len(imgs))
    bar = go.Figure(go.Bar(x=list(range(len(per))), y=per.tolist()))
    bar.update_layout(title=f"mean |Δpixel| from the start, iteration {it}", xaxis_title="distilled image",
                      yaxis_title="mean absolute change", height=280, margin={"t": 40, "b": 40, "l": 50, "r": 10})
    return (image_grid(imgs, cols, 80), image_grid(maps, cols, 80), bar,
            f"iteration **{it}** (snapshot {its.index(it) + 1} of {len(its)})")


def ltm_figure(ctx: AppContext, run_id):
    try:
        xs, ys = ctx.distill_view(run_id).ltm_curve()
    except (MDWError, OSError) as e:
        return message_figure(str(e))
    if not xs:
        return message_figure("no L_TM values yet")
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", name="L_TM"))
    fig.update_layout(title="trajectory-matching loss L_TM", xaxis_title="iteration", yaxis_title="L_TM",
                      height=280, margin={"t": 40, "b": 40, "l": 50, "r": 10})
    return fig


def export_gif(ctx: AppContext, run_id):
    try:
        path = ctx.distill_view(run_id).evolution_gif()
    except (MDWError, OSError) as e:
        return None, error_text(e)
    return (path, "GIF written") if path else (None, NO_SNAPSHOTS)


def build(ctx: AppContext, run_dd: gr.Dropdown) -> gr.Tab:
    with gr.Tab("Evolution", id="evolution") as tab:
        info = gr.Markdown(elem_id="evo-info")
        pos = gr.Slider(0, 1, value=0, step=1, label="snapshot", elem_id="evo-slider")
        caption = gr.Markdown(elem_id="evo-caption")
        with gr.Row():
            grid = gr.Image(label="synthetic images", interactive=False)
            change = gr.Image(label="change from the initialisation (brighter: more)", interactive=False)
        with gr.Row():
            bar = gr.Plot(label="per-image change")
            ltm = gr.Plot(label="L_TM")
        with gr.Row():
            gif_btn = gr.Button("Export the evolution as a GIF", size="sm")
            gif_msg = gr.Markdown()
        gif = gr.File(label="evolution.gif", interactive=False)

    gr.on([tab.select, run_dd.change], lambda r: slider_update(ctx, r), [run_dd], [pos, info], api_name=False).then(
        lambda r, p: show_snapshot(ctx, r, p), [run_dd, pos], [grid, change, bar, caption], api_name=False)
    pos.release(lambda r, p: show_snapshot(ctx, r, p), [run_dd, pos], [grid, change, bar, caption],
                api_name="evo_snapshot")
    gr.on([tab.select, run_dd.change], lambda r: ltm_figure(ctx, r), [run_dd], [ltm], api_name=False)
    gif_btn.click(lambda r: export_gif(ctx, r), [run_dd], [gif, gif_msg], api_name="evo_gif")
    return tab
