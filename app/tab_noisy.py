"""Noisy pairs tab: training pairs sorted by DTCL's clean score (or a track's score, or the pair id)
with both tracks' scores, filters, one page at a time (filtered, sorted and paged on the server:
mdw.views.noisy.pairs_page; the browser gets one page), a gallery of the page's first pairs, ROC / PR curves with precision and recall at a threshold (when the run knows which pairs
are noisy), the selected pair's per-word heatmaps, audit buttons and CSV export."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from mdw.errors import MDWError
from mdw.heatmaps.render import resize_image
from mdw.runs.audit import DECISIONS, record_decision
from mdw.runs.view import COLUMNS, FLAG_FILTERS, TRUTH_FILTERS
from mdw.views.noisy import (PAGE_SIZE, PAGE_SIZES, SORT_NAMES, computed_word_maps, export_audit, first_flagged_pair,
                             pair_detail, pairs_page)

from .components import StableGallery, StableImage
from .context import AppContext, error_text, message_figure

COLS = list(COLUMNS)
GALLERY_N = 40
SORTS = [(name, key) for key, name in SORT_NAMES.items()]   # (label, pair_order sort key)
ORDERS = ["ascending", "descending"]
LAST = 10 ** 12   # any page past the end is the last page (pairs_page)


def load_pairs(ctx: AppContext, run_id, flag, truth, lo, hi, sort="clean", order="ascending", page=1,
               page_size=PAGE_SIZE):
    """(table rows of one page, gallery items of its first GALLERY_N pairs, their pair ids, summary,
    the page number shown: clamped to the pages there are)."""
    try:
        v = ctx.view(run_id)
        pg = pairs_page(v, flag, truth, float(lo), float(hi), sort or "clean", order == "descending",
                        int(page or 1), int(page_size or PAGE_SIZE))
    except (MDWError, ValueError, TypeError, OSError) as e:
        return [], [], [], error_text(e), gr.skip()
    if v.scores() is None:
        return [], [], [], "This run has no DTCL scores yet (the experts stage writes them).", 1
    shown = pg.rows[:GALLERY_N]
    gallery = [(v.pair_image(r["pair"]), f"#{r['pair']} clean={r['clean']:.2f}") for r in shown]
    banner = v.noise_split_note()
    info = (f"⚠️ **{banner}**\n\n" if banner else "") + f"{pg.summary} (page {pg.page:,} of {pg.n_pages:,})"
    return pg.table(), gallery, [r["pair"] for r in shown], info, pg.page


def turn(page, to: str) -> int:
    """The page a paging button goes to (pairs_page clamps it to the pages there are)."""
    page = int(page or 1)
    return {"first": 1, "previous": max(1, page - 1), "next": page + 1, "last": LAST}[to]


def first_pair(ctx: AppContext, run_id):
    """The pair the tab opens on: the flagged pair with the lowest clean score (None without scores)."""
    try:
        return first_flagged_pair(ctx.view(run_id))
    except (MDWError, ValueError, OSError):
        return None


def show_pair(ctx: AppContext, run_id, pair, compute_missing=False):
    """(image, description, heatmap grid or None, heatmap note)."""
    if pair is None or pair == "":
        return None, "Pick a pair in the table or the gallery.", None, ""
    try:
        d = pair_detail(ctx.view(run_id), pair, compute_missing)
    except (MDWError, ValueError, OSError) as e:
        return None, error_text(e), None, ""
    flagged = "-" if d.flagged is None else ("**yes**" if d.flagged else "no")
    desc = (f"**pair {d.pair}**: {d.caption}\n\nclean score {d.clean:.3f} (track A {d.track_a:.3f}, track B "
            f"{d.track_b:.3f}); flagged: {flagged}; ground truth: {d.truth_text()}")
    return resize_image(d.image, 192), desc, d.maps.grid, d.maps.note


def compute_heatmap(ctx: AppContext, run_id, pair):
    try:
        maps = computed_word_maps(ctx.view(run_id), pair)
    except (MDWError, ValueError, OSError) as e:
        return None, error_text(e)
    return maps.grid, maps.note


def decide(ctx: AppContext, run_id, pair, decision, comment):
    """Record the decision; confirm only once it is on disk."""
    try:
        v = ctx.view(run_id)
        pair = v.check_pair(pair)
        row = record_decision(v.run_dir, "pair", pair, decision, comment or "")
    except (MDWError, ValueError, OSError) as e:
        return error_text(e)
    return f"✅ saved: pair {row['item']} → **{row['decision']}**" + (f" ({row['comment']})" if row["comment"] else "")


def detection(ctx: AppContext, run_id, threshold):
    """(ROC figure, PR figure, metrics text) at the threshold."""
    try:
        det = ctx.view(run_id).detection(float(threshold))
    except (MDWError, OSError) as e:
        return message_figure(str(e)), message_figure(""), error_text(e)
    if det is None:
        msg = "No ground truth (or no scores yet): ROC / PR need to know which pairs are noisy."
        return message_figure(msg), message_figure(msg), msg
    c, m = det["curves"], det["metrics"]
    roc = go.Figure(go.Scatter(x=c["fpr"], y=c["tpr"], mode="lines", name="DTCL"))
    roc.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot"}, name="chance"))
    roc.update_layout(title=f"ROC (noisy = positive), AUC {m['auc']:.3f}", xaxis_title="false positive rate",
                      yaxis_title="true positive rate", height=320, margin={"t": 40, "b": 40, "l": 40, "r": 10})
    pr = go.Figure(go.Scatter(x=c["recall"], y=c["precision"], mode="lines", name="DTCL"))
    pr.add_trace(go.Scatter(x=[m["recall"]], y=[m["precision"]], mode="markers", marker={"size": 12},
                            name=f"threshold {float(threshold):.2f}"))
    pr.update_layout(title="precision-recall", xaxis_title="recall", yaxis_title="precision", height=320,
                     margin={"t": 40, "b": 40, "l": 40, "r": 10})
    text = (f"At threshold **{float(threshold):.2f}** (flag when clean score < threshold): precision "
            f"**{m['precision']:.3f}**, recall **{m['recall']:.3f}**, F1 {m['f1']:.3f}; "
            f"{m['flagged']} flagged, {m['noisy']} truly noisy.")
    return roc, pr, text


def export(ctx: AppContext, run_id, threshold):
    """([decisions.csv, cleaned_pairs_clean-ge-<threshold>.csv], message): the one export of the app."""
    try:
        out = export_audit(ctx.view(run_id), float(threshold))
    except (MDWError, ValueError, OSError) as e:
        return None, error_text(e)
    return out.paths(), out.summary()


def build(ctx: AppContext, run_dd: gr.Dropdown) -> gr.Tab:
    with gr.Tab("Noisy pairs", id="noisy") as tab:
        with gr.Row():
            flag = gr.Radio(list(FLAG_FILTERS), value="all", label="DTCL flag")
            truth = gr.Radio(list(TRUTH_FILTERS), value="all", label="ground truth")
            lo = gr.Slider(0, 1, value=0, step=0.01, label="clean score from")
            hi = gr.Slider(0, 1, value=1, step=0.01, label="to")
        with gr.Row():
            sort = gr.Dropdown(SORTS, value="clean", label="sort by", elem_id="noisy-sort")
            order = gr.Radio(ORDERS, value="ascending", label="order", elem_id="noisy-order")
            page_size = gr.Dropdown(list(PAGE_SIZES), value=PAGE_SIZE, label="rows a page", elem_id="noisy-page-size")
            first_btn = gr.Button("⏮ first", size="sm", elem_id="noisy-first")
            prev_btn = gr.Button("◀ previous", size="sm", elem_id="noisy-prev")
            page = gr.Number(value=1, precision=0, minimum=1, label="page", elem_id="noisy-page")
            next_btn = gr.Button("next ▶", size="sm", elem_id="noisy-next")
            last_btn = gr.Button("last ⏭", size="sm", elem_id="noisy-last")
        info = gr.Markdown(elem_id="noisy-info")
        table = gr.Dataframe(headers=COLS, interactive=False, label="pairs (click a row)", elem_id="noisy-table",
                             max_height=360)
        gallery = StableGallery(label="the page's first pairs (click one)", columns=10, height=260,
                             allow_preview=False, elem_id="noisy-gallery")
        ids = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                pair = gr.Number(value=None, precision=0, label="selected pair id", elem_id="noisy-pair")
                image = StableImage(label="image", height=200, interactive=False, elem_id="noisy-image")
                desc = gr.Markdown(elem_id="noisy-desc")
                decision = gr.Radio(list(DECISIONS["pair"]), value="noisy", label="audit decision")
                comment = gr.Textbox(label="comment", elem_id="noisy-comment")
                decide_btn = gr.Button("Record decision", variant="primary", elem_id="noisy-decide")
                decide_msg = gr.Markdown(elem_id="noisy-decide-msg")
            with gr.Column(scale=2):
                heat_note = gr.Markdown()
                heat = StableImage(label="per-word heatmaps", interactive=False, elem_id="noisy-heat")
                heat_btn = gr.Button("Compute heatmaps", size="sm")
        gr.Markdown("### Detection against the ground truth")
        threshold = gr.Slider(0, 1, value=0.5, step=0.01, label="threshold on the clean score (below: noisy; at or "
                              "above: kept in the cleaned pairs export)", elem_id="noisy-threshold")
        det_md = gr.Markdown(elem_id="noisy-det")
        with gr.Row():
            roc = gr.Plot(label="ROC")
            pr = gr.Plot(label="precision-recall")
        with gr.Row():
            export_btn = gr.Button("Export decisions + cleaned pairs at the threshold (CSV)", size="sm")
            export_msg = gr.Markdown()
        files = gr.File(label="exports", file_count="multiple", interactive=False)

    filters = [run_dd, flag, truth, lo, hi, sort, order]
    listing = [table, gallery, ids, info, page]
    at_page = lambda r, f, t, a, b, so, o, p, n: load_pairs(ctx, r, f, t, a, b, so, o, p, n)  # noqa: E731
    at_first = lambda r, f, t, a, b, so, o, n: load_pairs(ctx, r, f, t, a, b, so, o, 1, n)  # noqa: E731
    # a new filter, sort or page size starts at page 1; the page box and the buttons move within
    gr.on([flag.change, truth.change, lo.release, hi.release, sort.change, order.change, page_size.change],
          at_first, filters + [page_size], listing, api_name=False)
    gr.on([page.submit], at_page, filters + [page, page_size], listing, api_name="noisy_pairs")

    def go(to):
        return lambda r, f, t, a, b, so, o, p, n: at_page(r, f, t, a, b, so, o, turn(p, to), n)

    for btn, to in ((first_btn, "first"), (prev_btn, "previous"), (next_btn, "next"), (last_btn, "last")):
        btn.click(go(to), filters + [page, page_size], listing, api_name=False)
    threshold.release(lambda r, t: detection(ctx, r, t), [run_dd, threshold], [roc, pr, det_md],
                      api_name="noisy_detection")

    def opened(run_id, *rest):
        """The table (page 1 on a new run), the curves and the first flagged pair (kept when one is
        already picked)."""
        *filt, pg, size, thr, current, changed_run = rest
        first = first_pair(ctx, run_id) if current is None or changed_run else current
        return (*load_pairs(ctx, run_id, *filt, 1 if changed_run else pg, size), *detection(ctx, run_id, thr), first,
                *show_pair(ctx, run_id, first, compute_missing=True))

    # opening the tab is one event, not three (each event costs a round trip and a queue slot)
    detail = [image, desc, heat, heat_note]
    outs = listing + [roc, pr, det_md, pair] + detail
    ins = filters + [page, page_size, threshold, pair]
    tab.select(lambda *a: opened(*a, False), ins, outs, api_name=False)
    run_dd.change(lambda *a: opened(*a, True), ins, outs, api_name="noisy_open")

    def from_table(evt: gr.SelectData):
        return int(evt.row_value[0]) if evt.row_value else gr.skip()

    def from_gallery(ids_, evt: gr.SelectData):
        return ids_[evt.index] if isinstance(evt.index, int) and evt.index < len(ids_) else gr.skip()

    show = lambda r, p: show_pair(ctx, r, p)  # noqa: E731
    table.select(from_table, None, [pair], api_name=False).then(show, [run_dd, pair], detail, api_name=False)
    gallery.select(from_gallery, [ids], [pair], api_name=False).then(show, [run_dd, pair], detail, api_name=False)
    pair.submit(show, [run_dd, pair], detail, api_name="noisy_pair")
    heat_btn.click(lambda r, p: compute_heatmap(ctx, r, p), [run_dd, pair], [heat, heat_note], api_name="noisy_heatmap")
    decide_btn.click(lambda r, p, d, c: decide(ctx, r, p, d, c), [run_dd, pair, decision, comment], [decide_msg],
                     api_name="noisy_decide")
    export_btn.click(lambda r, t: export(ctx, r, t), [run_dd, threshold], [files, export_msg], api_name="noisy_export")
    return tab
