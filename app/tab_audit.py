"""Audit tab: the distilled pairs one by one (image, decoded nearest real captions, P̃'s top
matches), accept / reject / unsure with a comment, a progress counter and export."""
from __future__ import annotations

import gradio as gr

from mdw.errors import MDWError
from mdw.heatmaps.render import resize_image
from mdw.runs.audit import DECISIONS, latest_decisions, record_decision

from .components import StableImage
from .context import AppContext, error_text
from .tab_noisy import export

NO_SET = "This run has no distilled set yet (the distill stage writes it)."


def progress_text(ctx: AppContext, run_id) -> str:
    try:
        dv = ctx.distill_view(run_id)
        syn = dv.distilled()
        if syn is None:
            return NO_SET
        done = latest_decisions(dv.run_dir, "distilled")
    except (MDWError, OSError) as e:
        return error_text(e)
    n = sum(1 for i in done if i < syn.m)
    counts = {d: sum(1 for i, r in done.items() if i < syn.m and r["decision"] == d) for d in DECISIONS["distilled"]}
    return f"**{n} of {syn.m}** distilled pairs decided ({', '.join(f'{k} {v}' for k, v in counts.items())})"


def show(ctx: AppContext, run_id, index):
    """(image, decoded captions table, P̃ matches table, current decision text, index, progress)."""
    try:
        dv = ctx.distill_view(run_id)
        if dv.distilled() is None:
            return None, [], [], NO_SET, 0, NO_SET
        i = dv.check_index(index)
        rows = dv.decoded()
        nearest = rows[i]["nearest"] if i < len(rows) else []
        matches = dv.top_matches(i, 5)
        img = resize_image(dv.distilled().images_u8()[i], 224)
        prev = latest_decisions(dv.run_dir, "distilled").get(i)
    except (MDWError, ValueError, OSError) as e:
        return None, [], [], error_text(e), index, ""
    init = rows[i]["init_pair"] if i < len(rows) else int(dv.distilled().init_pairs[i])
    current = (f"distilled pair **{i}** (started from real pair {init}); "
               + (f"decided: **{prev['decision']}** {prev.get('comment') or ''}" if prev else "not decided yet"))
    return (img, [[r["pair"], round(float(r["sim"]), 4), r["caption"]] for r in nearest],
            [[r["text"], r["p"], r["caption"]] for r in matches], current, i, progress_text(ctx, run_id))


def step(ctx: AppContext, run_id, index, delta):
    try:
        dv = ctx.distill_view(run_id)
        m = dv.distilled().m if dv.distilled() is not None else 1
    except (MDWError, OSError):
        m = 1
    return (int(index or 0) + delta) % max(m, 1)


def decide(ctx: AppContext, run_id, index, decision, comment):
    """Record the decision; confirm only once it is on disk."""
    try:
        dv = ctx.distill_view(run_id)
        if dv.distilled() is None:
            return NO_SET, NO_SET
        i = dv.check_index(index)
        row = record_decision(dv.run_dir, "distilled", i, decision, comment or "")
    except (MDWError, ValueError, OSError) as e:
        return error_text(e), ""
    return f"✅ saved: distilled pair {row['item']} → **{row['decision']}**", progress_text(ctx, run_id)


def build(ctx: AppContext, run_dd: gr.Dropdown) -> gr.Tab:
    with gr.Tab("Audit", id="audit") as tab:
        counter = gr.Markdown(elem_id="audit-progress")
        with gr.Row():
            prev_btn = gr.Button("◀ previous", size="sm")
            index = gr.Number(value=0, precision=0, label="distilled pair", elem_id="audit-index")
            next_btn = gr.Button("next ▶", size="sm")
        with gr.Row():
            with gr.Column(scale=1):
                image = StableImage(label="distilled image", height=240, interactive=False)
                current = gr.Markdown(elem_id="audit-current")
                decision = gr.Radio(list(DECISIONS["distilled"]), value="accept", label="decision")
                comment = gr.Textbox(label="comment", elem_id="audit-comment")
                save = gr.Button("Record decision", variant="primary", elem_id="audit-decide")
                msg = gr.Markdown(elem_id="audit-msg")
            with gr.Column(scale=2):
                nearest = gr.Dataframe(headers=["real pair", "similarity", "decoded nearest caption"],
                                       interactive=False, label="its text, decoded", elem_id="audit-nearest")
                matches = gr.Dataframe(headers=["text", "P̃", "caption"], interactive=False,
                                       label="P̃'s top matches for this image")
        with gr.Row():
            threshold = gr.Slider(0, 1, value=0.5, step=0.01, label="cleaned pairs: keep a clean score of at least",
                                  elem_id="audit-threshold")
            export_btn = gr.Button("Export decisions + cleaned pairs at the threshold (CSV)", size="sm")
            export_msg = gr.Markdown()
        files = gr.File(label="exports", file_count="multiple", interactive=False)

    outs = [image, nearest, matches, current, index, counter]
    gr.on([tab.select, run_dd.change, index.submit], lambda r, i: show(ctx, r, i), [run_dd, index], outs,
          api_name="audit_show")
    prev_btn.click(lambda r, i: step(ctx, r, i, -1), [run_dd, index], [index], api_name=False).then(
        lambda r, i: show(ctx, r, i), [run_dd, index], outs, api_name=False)
    next_btn.click(lambda r, i: step(ctx, r, i, 1), [run_dd, index], [index], api_name=False).then(
        lambda r, i: show(ctx, r, i), [run_dd, index], outs, api_name=False)
    save.click(lambda r, i, d, c: decide(ctx, r, i, d, c), [run_dd, index, decision, comment], [msg, counter],
               api_name="audit_decide").then(lambda r, i: show(ctx, r, i), [run_dd, index], outs, api_name=False)
    export_btn.click(lambda r, t: export(ctx, r, t), [run_dd, threshold], [files, export_msg], api_name="audit_export")
    return tab
