"""Assemble the workbench: a run picker shared by every tab, then one tab per module."""
from __future__ import annotations

import importlib

import gradio as gr

from .context import AppContext

TABS = ["tab_runs", "tab_noisy", "tab_correspondence", "tab_evolution", "tab_embedding", "tab_retrieval", "tab_audit"]
TITLE = "MDW Workbench"
CSS = ".mdw-progress{font-size:0.9em} #run-picker{max-width:640px}"


def build_app(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title=TITLE) as demo:
        with gr.Row():
            gr.Markdown(f"## {TITLE}\nMultimodal dataset distillation on noisy image-text data: "
                        "DTCL flags mismatched pairs; the distilled set keeps what matters.")
            run_dd = gr.Dropdown(choices=ctx.run_choices(), value=None, label="run", elem_id="run-picker", interactive=True,
                                 allow_custom_value=True)
            refresh_btn = gr.Button("↻ runs", size="sm", scale=0, elem_id="refresh-runs")
        with gr.Tabs(elem_id="tabs"):
            for name in TABS:
                importlib.import_module(f"app.{name}").build(ctx, run_dd)

        def on_load():
            return gr.update(choices=ctx.run_choices(), value=ctx.default_run())

        def refresh_runs(current):
            ids = [c[1] for c in ctx.run_choices()]
            return gr.update(choices=ctx.run_choices(), value=current if current in ids else ctx.default_run())

        demo.load(on_load, None, [run_dd], api_name=False)
        refresh_btn.click(refresh_runs, [run_dd], [run_dd], api_name=False)
    return demo
