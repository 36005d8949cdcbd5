"""Runs tab: the new-run form, the selected run's live progress, stage and loss curves (polled
from its folder with a gr.Timer), cancel, and the table of runs. One run at a time; the rest queue."""
from __future__ import annotations

import html
import json

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mdw.config import RunConfig, apply_overrides, demo_config_path
from mdw.errors import MDWError
from mdw.runs.layout import RunLayout
from mdw.views.runs import form_choices, loss_curves, short_label

from .context import AppContext, error_text, message_figure

TABLE_COLS = ["run", "state", "stage", "progress", "created", "message", "id"]


def demo_config(path: str = "") -> dict:
    """The demo run's config (the built-in one unless `path` names another)."""
    return RunConfig.load(path or demo_config_path()).to_dict()


def build_config(source, path, image_root, eta, preset, m, iterations, epochs, device, extra) -> dict:
    """The built-in demo config with the form's fields and extra `key=value` lines applied (validated)."""
    over = [f"data.source={source}", f"data.eta={float(eta)}", f"model.preset={preset}",
            f"distill.m={int(m)}", f"distill.iterations={int(iterations)}", f"experts.epochs={int(epochs)}",
            f"model.device={device}"]
    if source != "scenes":
        over += [f"data.path={(path or '').strip()}", f"data.image_root={(image_root or '').strip()}"]
    over += [ln.strip() for ln in (extra or "").splitlines() if ln.strip() and not ln.strip().startswith("#")]
    cfg = apply_overrides(RunConfig.from_dict(demo_config()), over)
    return cfg.validate().to_dict()


def runs_table(ctx: AppContext) -> list:
    rows = []
    for r in ctx.store.list_runs():
        rows.append([short_label(r["id"]), r["state"], r.get("stage") or "", round(float(r.get("progress") or 0), 3),
                     r.get("created", ""), (r.get("message") or "")[:80], r["id"]])
    return rows


def progress_html(status: dict | None) -> str:
    if not status:
        return "<div class='mdw-progress'>no run selected</div>"
    frac = max(0.0, min(1.0, float(status.get("progress") or 0)))
    state = html.escape(str(status.get("state")))
    stage = html.escape(str(status.get("stage") or "-"))
    return (f"<div class='mdw-progress' data-state='{state}'>"
            f"<div style='background:#ddd;border-radius:4px;height:16px;width:100%'>"
            f"<div style='background:#3b82f6;height:16px;border-radius:4px;width:{frac * 100:.1f}%'></div></div>"
            f"<span id='mdw-run-state'>{state}</span> · stage <b>{stage}</b> · {frac * 100:.0f}%</div>")


def status_markdown(status: dict | None) -> str:
    if not status:
        return "No run selected. Start one below."
    lines = [f"**{short_label(status['id'])}**: **{status['state']}**, stage `{status.get('stage') or '-'}` "
             f"<small>(id `{status['id']}`)</small>",
             f"{status.get('message') or ''}", f"stages done: {', '.join(status.get('stages_done') or []) or 'none'}"]
    if status.get("error"):
        lines.append(f"```\n{status['error'][:2000]}\n```")
    return "\n\n".join(lines)


def loss_figure(ctx: AppContext, run_id) -> go.Figure:
    """Expert losses and detection AUC per epoch; L_TM per distillation iteration."""
    curves = loss_curves(ctx.store.read_events(run_id))
    if curves.empty():
        return message_figure("no loss values yet")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("experts (per epoch)", "distillation L_TM (per iteration)"))
    for key, c in curves.experts.items():
        fig.add_trace(go.Scatter(x=c.steps, y=c.values, mode="lines+markers", name=key), 1, 1)
    if curves.ltm:
        fig.add_trace(go.Scatter(x=curves.ltm.steps, y=curves.ltm.values, mode="lines", name="L_TM"), 1, 2)
    fig.update_xaxes(title_text="epoch", row=1, col=1)
    fig.update_xaxes(title_text="iteration", row=1, col=2)
    # the titles sit below the top margin and the legend under the plots: nothing overlaps gr.Plot's label
    fig.update_layout(height=340, margin={"l": 40, "r": 10, "t": 60, "b": 40},
                      legend={"orientation": "h", "y": -0.25, "x": 0})
    return fig


def refresh(ctx: AppContext, run_id, sig):
    """One timer tick: launch queued runs, then the selected run's status, progress, curves, log,
    the runs table and the run picker's labels. The figure is only resent when the run's events
    changed, the picker only when a run appeared or changed state."""
    ctx.manager.poll()
    table = runs_table(ctx)
    old_events, old_choices = sig if isinstance(sig, (list, tuple)) and len(sig) == 2 else ("", "")
    choices = ctx.run_choices()
    picker = gr.update(choices=choices) if repr(choices) != old_choices else gr.skip()
    try:
        d = ctx.run_dir(run_id)
    except MDWError:
        return status_markdown(None), progress_html(None), gr.skip(), "", table, picker, ("", repr(choices))
    status = ctx.store.read_status(run_id)
    ev = RunLayout(d).events
    new_events = f"{run_id}:{ev.stat().st_size if ev.exists() else 0}"
    fig = loss_figure(ctx, run_id) if new_events != old_events else gr.skip()
    return (status_markdown(status), progress_html(status), fig, ctx.store.log_tail(run_id, 12), table, picker,
            (new_events, repr(choices)))


def start_run(ctx: AppContext, name, source, path, image_root, eta, preset, m, iterations, epochs, device, extra):
    try:
        cfg = build_config(source, path, image_root, eta, preset, m, iterations, epochs, device, extra)
        run_id = ctx.manager.create_and_start(cfg, name=(name or "").strip() or cfg.get("name"))
    except MDWError as e:
        return error_text(e), gr.skip()
    state = ctx.store.read_status(run_id)["state"]
    return f"started **{run_id}** ({state})", gr.update(choices=ctx.run_choices(), value=run_id)


def cancel_run(ctx: AppContext, run_id):
    try:
        ctx.run_dir(run_id)
        st = ctx.manager.cancel(run_id)
    except MDWError as e:
        return error_text(e)
    return f"run {run_id}: {st['state']}"


def run_config_json(ctx: AppContext, run_id) -> str:
    try:
        return json.dumps(ctx.store.read_config(run_id), indent=2)
    except MDWError:
        return ""


def build(ctx: AppContext, run_dd: gr.Dropdown) -> None:
    demo = demo_config()
    choices = form_choices()
    with gr.Tab("Runs", id="runs"):
        with gr.Row():
            with gr.Column(scale=3):
                status_md = gr.Markdown(elem_id="run-status")
                bar = gr.HTML(elem_id="run-progress")
                with gr.Row():
                    cancel_btn = gr.Button("Cancel this run", variant="stop", size="sm", elem_id="cancel-run")
                    cancel_msg = gr.Markdown()
                plot = gr.Plot(label="loss curves", show_label=False, elem_id="run-losses")
                log = gr.Textbox(label="log (last lines)", lines=6, max_lines=12, interactive=False)
            with gr.Column(scale=2):
                gr.Markdown("### New run")
                name = gr.Textbox(label="name", value="run", elem_id="new-run-name")
                source = gr.Dropdown(choices.sources, value="scenes", label="data source")
                path = gr.Textbox(label="data path (folder / JSON / CSV / JSONL / shards; not for scenes)")
                image_root = gr.Textbox(label="image root (Karpathy, CSV, JSONL)")
                eta = gr.Slider(0.0, 0.8, value=demo["data"]["eta"], step=0.05, label="η (mismatched fraction)")
                preset = gr.Dropdown(choices.presets, value=demo["model"]["preset"], allow_custom_value=True, label="model preset")
                with gr.Row():
                    m = gr.Number(value=demo["distill"]["m"], precision=0, label="M (distilled pairs)")
                    iters = gr.Number(value=demo["distill"]["iterations"], precision=0, label="iterations")
                    epochs = gr.Number(value=demo["experts"]["epochs"], precision=0, label="expert epochs")
                device = gr.Dropdown(choices.devices, value="auto", label="device")
                extra = gr.Textbox(label="more settings, key=value a line (e.g. data.scenes.n_train=500)", lines=3,
                                   elem_id="new-run-extra")
                start_btn = gr.Button("Start", variant="primary", elem_id="start-run")
                start_msg = gr.Markdown(elem_id="start-msg")
        table = gr.Dataframe(headers=TABLE_COLS, label="runs", interactive=False, elem_id="runs-table")
        with gr.Accordion("config of the selected run", open=False):
            cfg_json = gr.Code(language="json")
        sig = gr.State(("", ""))
        timer = gr.Timer(2.0)

    outs = [status_md, bar, plot, log, table, run_dd, sig]
    timer.tick(lambda r, s: refresh(ctx, r, s), [run_dd, sig], outs, show_progress="hidden", api_name="runs_refresh")
    run_dd.change(lambda r: refresh(ctx, r, ("", ""))[:5], [run_dd], outs[:5], show_progress="hidden", api_name=False)
    run_dd.change(lambda r: run_config_json(ctx, r), [run_dd], [cfg_json], api_name=False)
    start_btn.click(lambda *a: start_run(ctx, *a), [name, source, path, image_root, eta, preset, m, iters, epochs,
                                                    device, extra], [start_msg, run_dd], api_name="start_run")
    cancel_btn.click(lambda r: cancel_run(ctx, r), [run_dd], [cancel_msg], api_name="cancel_run")
