"""Runs tab: the new-run form, the selected run's live progress, stage and loss curves (polled
from its folder with a gr.Timer), cancel, and the table of runs. One run at a time; the rest queue."""
from __future__ import annotations

import html
import json
import os

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mdw.config import RunConfig, apply_overrides
from mdw.errors import MDWError
from mdw.models.presets import preset_choices

from .context import AppContext, error_text, message_figure

SOURCES = ["scenes", "flickr8k", "karpathy", "csv", "jsonl", "webdataset"]
DEVICES = ["auto", "cpu", "cuda"]
TABLE_COLS = ["id", "name", "state", "stage", "progress", "created", "message"]


def demo_config_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "configs", "demo.json")


def demo_config() -> dict:
    return RunConfig.load(demo_config_path()).to_dict()


def build_config(source, path, image_root, eta, preset, m, iterations, epochs, device, extra) -> dict:
    """The demo config with the form's fields and extra `key=value` lines applied (validated)."""
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
        rows.append([r["id"], r.get("name", ""), r["state"], r.get("stage") or "", round(float(r.get("progress") or 0), 3),
                     r.get("created", ""), (r.get("message") or "")[:80]])
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
    lines = [f"**{status['id']}** ({status.get('name', '')}): **{status['state']}**, stage `{status.get('stage') or '-'}`",
             f"{status.get('message') or ''}", f"stages done: {', '.join(status.get('stages_done') or []) or 'none'}"]
    if status.get("error"):
        lines.append(f"```\n{status['error'][:2000]}\n```")
    return "\n\n".join(lines)


def loss_figure(ctx: AppContext, run_id) -> go.Figure:
    """Expert losses and detection AUC per epoch; L_TM per distillation iteration."""
    events = ctx.store.read_events(run_id)
    ex = [e for e in events if e.get("stage") == "experts"]
    di = list({e["step"]: e for e in events if e.get("stage") == "distill" and "L_TM" in e}.values())
    di.sort(key=lambda e: e["step"])  # a resumed distill stage re-logs its steps: the latest wins
    if not ex and not di:
        return message_figure("no loss values yet")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("experts (per epoch)", "distillation L_TM"))
    for key in ("train_loss_A", "train_loss_B", "train_loss", "auc"):
        pts = [(e["step"], e[key]) for e in ex if isinstance(e.get(key), (int, float))]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=key), 1, 1)
    if di:
        fig.add_trace(go.Scatter(x=[e["step"] for e in di], y=[e["L_TM"] for e in di], mode="lines", name="L_TM"), 1, 2)
    fig.update_layout(height=300, margin={"l": 30, "r": 10, "t": 30, "b": 30})
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
    ev = os.path.join(d, "events.jsonl")
    new_events = f"{run_id}:{os.path.getsize(ev) if os.path.exists(ev) else 0}"
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
    with gr.Tab("Runs", id="runs"):
        with gr.Row():
            with gr.Column(scale=3):
                status_md = gr.Markdown(elem_id="run-status")
                bar = gr.HTML(elem_id="run-progress")
                with gr.Row():
                    cancel_btn = gr.Button("Cancel this run", variant="stop", size="sm", elem_id="cancel-run")
                    cancel_msg = gr.Markdown()
                plot = gr.Plot(label="loss curves")
                log = gr.Textbox(label="log (last lines)", lines=6, max_lines=12, interactive=False)
            with gr.Column(scale=2):
                gr.Markdown("### New run")
                name = gr.Textbox(label="name", value="run", elem_id="new-run-name")
                source = gr.Dropdown(SOURCES, value="scenes", label="data source")
                path = gr.Textbox(label="data path (folder / JSON / CSV / JSONL / shards; not for scenes)")
                image_root = gr.Textbox(label="image root (Karpathy, CSV, JSONL)")
                eta = gr.Slider(0.0, 0.8, value=demo["data"]["eta"], step=0.05, label="η (mismatched fraction)")
                preset = gr.Dropdown(preset_choices(), value=demo["model"]["preset"], allow_custom_value=True, label="model preset")
                with gr.Row():
                    m = gr.Number(value=demo["distill"]["m"], precision=0, label="M (distilled pairs)")
                    iters = gr.Number(value=demo["distill"]["iterations"], precision=0, label="iterations")
                    epochs = gr.Number(value=demo["experts"]["epochs"], precision=0, label="expert epochs")
                device = gr.Dropdown(DEVICES, value="auto", label="device")
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
