"""Evolution tab: what distillation did. A slider over the snapshots shows the synthetic images and
their change from the start amplified (with a scale bar saying by how much); curves show each image's
change, P̃'s diagonal mass and entropy and the step sizes α over the iterations, and L_TM; GIF export.
The numbers come from mdw.views.evolution."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from mdw.errors import MDWError
from mdw.views.evolution import evolution_curves, snapshot_frame
from mdw.views.runs import latest_per_step

from .components import StableImage
from .context import AppContext, error_text, message_figure

NO_SNAPSHOTS = "This run has no distillation snapshots yet (the distill stage writes them)."
MARGIN = {"t": 40, "b": 40, "l": 50, "r": 10}


def curves(ctx: AppContext, run_id):
    """The run's EvolutionCurves, computed once per run state (ValueError without snapshots)."""
    dv = ctx.distill_view(run_id)
    # the DistillView is made anew whenever status.json changes (AppContext.views)
    return ctx.cached(("evolution", dv.run_dir), (id(dv), tuple(dv.snapshot_iterations())), lambda: evolution_curves(dv))


def _lines(title, ytitle, xs, series: dict, log=False) -> go.Figure:
    fig = go.Figure([go.Scatter(x=xs, y=ys, mode="lines+markers", name=name) for name, ys in series.items()])
    fig.update_layout(title=title, xaxis_title="iteration", yaxis_title=ytitle, height=300, margin=MARGIN,
                      yaxis_type="log" if log else "linear")
    return fig


def curve_figures(ctx: AppContext, run_id):
    """(per-image change, P̃ figure, α figure, L_TM figure, info)."""
    try:
        c = curves(ctx, run_id)
        ltm = latest_per_step(ctx.store.read_events(run_id), "distill", "L_TM")
    except (MDWError, ValueError, OSError) as e:
        msg = NO_SNAPSHOTS if isinstance(e, ValueError) else error_text(e)
        return (*(message_figure(msg) for _ in range(4)), msg)
    its = c.iterations
    change = _lines("per-image change from the start (one line an image)", "mean |Δpixel| (fraction of range)",
                    its, {f"image {i}": c.change[:, i].tolist() for i in range(c.change.shape[1])})
    change.update_layout(showlegend=False)
    p = _lines("P̃ over iterations", "fraction", its, {"diagonal mass": c.p_diag.tolist(),
                                                       "row entropy / log M": c.p_entropy.tolist()})
    alpha = _lines("student step sizes α", "α (log scale)", its,
                   {g: c.alpha[:, k].tolist() for k, g in enumerate(c.groups)}, log=True)
    ltm_fig = (_lines("trajectory-matching loss L_TM", "L_TM", ltm.steps, {"L_TM": ltm.values}) if ltm
               else message_figure("no L_TM values yet"))
    info = (f"{len(its)} snapshots: iterations {', '.join(map(str, its))}. The change maps are amplified "
            f"**×{c.factor:g}** so the change distillation made is visible.")
    return change, p, alpha, ltm_fig, info


def slider_update(ctx: AppContext, run_id):
    try:
        its = ctx.distill_view(run_id).snapshot_iterations()
    except (MDWError, OSError):
        its = []
    if not its:
        return gr.update(minimum=0, maximum=1, value=0)
    return gr.update(minimum=0, maximum=max(len(its) - 1, 1), value=len(its) - 1, step=1)


def show_snapshot(ctx: AppContext, run_id, pos):
    """(image grid at the snapshot, amplified change grid with its scale bar, caption)."""
    try:
        c = curves(ctx, run_id)
        it = c.iterations[max(0, min(int(pos or 0), len(c.iterations) - 1))]
        f = snapshot_frame(ctx.distill_view(run_id), it, c)
    except ValueError:
        return None, None, NO_SNAPSHOTS
    except (MDWError, OSError) as e:
        return None, None, error_text(e)
    return f.images, f.change, f"{f.caption()} (snapshot {f.position + 1} of {len(c.iterations)})"


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
            grid = StableImage(label="synthetic images", interactive=False, elem_id="evo-grid")
            change = StableImage(label="change from the start, amplified (scale bar below)", interactive=False,
                              elem_id="evo-change")
        with gr.Row():
            per_image = gr.Plot(label="per-image change", show_label=False, elem_id="evo-per-image")
            ltm = gr.Plot(label="L_TM", show_label=False)
        with gr.Row():
            pfig = gr.Plot(label="P̃", show_label=False, elem_id="evo-p")
            alpha = gr.Plot(label="α", show_label=False, elem_id="evo-alpha")
        with gr.Row():
            gif_btn = gr.Button("Export the evolution as a GIF", size="sm")
            gif_msg = gr.Markdown()
        gif = gr.File(label="evolution.gif", interactive=False)

    frame = [grid, change, caption]
    gr.on([tab.select, run_dd.change], lambda r: slider_update(ctx, r), [run_dd], [pos], api_name=False).then(
        lambda r, p: show_snapshot(ctx, r, p), [run_dd, pos], frame, api_name=False)
    pos.release(lambda r, p: show_snapshot(ctx, r, p), [run_dd, pos], frame, api_name="evo_snapshot")
    gr.on([tab.select, run_dd.change], lambda r: curve_figures(ctx, r), [run_dd], [per_image, pfig, alpha, ltm, info],
          api_name="evo_curves")
    gif_btn.click(lambda r: export_gif(ctx, r), [run_dd], [gif, gif_msg], api_name="evo_gif")
    return tab
