"""`python -m mdw heatmap --run RUN --image PATH --caption TEXT --out FILE.png`: per-word heatmaps.

Draws one overlay per word of the caption (a labelled grid: the word and s(v, w) under each), or
one word's overlay with --word, using a run's final expert (METHOD §7). A caption longer than the
text encoder's context gets maps for the words it read and a printed note ("the first N of M words
are encoded"); --word naming a word after those says so.
"""
from __future__ import annotations


from ..data.decode import read_square
from ..errors import DataError, MDWError
from ..heatmaps.compute import CamOptions, word_maps
from ..heatmaps.render import CMAPS, label_tiles, overlay, save_png, word_grid
from ..runs.store import read_json
from ..train.experts_io import load_expert
from ..runs.migrate import open_run
from .score_cmd import resolve_run_dir


def add_parser(sub, runs_dir: str) -> None:
    p = sub.add_parser("heatmap", help="per-word heatmaps (integrated gradients with Grad-CAM) of an (image, "
                                       "caption) pair with a run's expert")
    p.add_argument("--run", required=True, help="a run id (in --runs) or a run folder")
    p.add_argument("--image", required=True, help="an image file")
    p.add_argument("--caption", required=True, help="the caption (quote it)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--word", default="", help="draw only this word (as written in the caption)")
    p.add_argument("--track", default="A", help="expert track: A or B (DTCL), A (plain)")
    p.add_argument("--experts", default="", help="dtcl | plain (default: what the run trained)")
    p.add_argument("--size", type=int, default=192, help="display size of each tile in px")
    p.add_argument("--alpha", type=float, default=0.45, help="heat map opacity, 0..1")
    p.add_argument("--cmap", default="turbo", choices=CMAPS)
    p.add_argument("--shifts", type=int, default=CamOptions().shifts,
                   help="shift-and-stitch passes per axis (finer maps; 1: the plain last map)")
    p.add_argument("--runs", default=runs_dir)
    p.set_defaults(func=heatmap)


def heatmap(args) -> int:
    if not args.caption.strip():
        raise DataError("--caption: the caption is empty")
    if args.shifts < 1:
        raise MDWError(f"--shifts: must be >= 1, got {args.shifts}")
    if not 0.0 <= args.alpha <= 1.0:
        raise MDWError(f"--alpha: must be in [0, 1], got {args.alpha}")
    run_dir = resolve_run_dir(args.run, args.runs)
    lay = open_run(run_dir)
    kind = args.experts or lay.main_expert_kind(bool(read_json(lay.config)["experts"]["dtcl"])) or "dtcl"
    try:
        model = load_expert(run_dir, kind, args.track)
    except FileNotFoundError:
        raise MDWError(f"run {args.run}: no {kind} expert track {args.track!r} "
                       "(has the experts stage finished?)") from None
    image = read_square(args.image, model.image_size)
    wm = word_maps(model, image[None], [args.caption], cam=CamOptions(shifts=args.shifts))[0]
    if args.word:
        i = wm.word_index(args.word)
        if i is None and wm.beyond_context(args.word):
            raise MDWError(f"--word {args.word!r} is beyond the text encoder's context ({wm.fit.describe()})")
        if i is None:
            raise MDWError(f"--word {args.word!r} is not among the caption's words: {', '.join(wm.words)}")
        tile = overlay(image, wm.maps[i], args.alpha, display_size=args.size, cmap=args.cmap)
        arr = label_tiles([tile], [f"{wm.words[i]}  s={wm.scores[i]:.3f}"])
    else:
        arr = word_grid(image, wm, tile=args.size, alpha=args.alpha, cmap=args.cmap)
    save_png(arr, args.out)
    words = ", ".join(f"{w} {s:.3f}" for w, s in zip(wm.words, wm.scores))
    print(f"s(image, caption) = {wm.pair_score:.3f}; words: {words}")
    if wm.cut:
        print(f"note: {wm.cut_note()}")
    print(f"wrote {args.out}")
    return 0



def add_bench_parser(bsub) -> None:
    """`python -m mdw bench heatmaps` (registered by bench_cmd)."""
    b = bsub.add_parser("heatmaps",
                        help="pointing game of the word heatmaps on scenes: expert vs random init vs centre")
    b.add_argument("--scenes-train", type=int, default=None, help="scenes training images")
    b.add_argument("--epochs", type=int, default=None, help="expert epochs")
    b.add_argument("--dtcl", action="store_true", help="train DTCL experts (default: one plain InfoNCE track)")
    b.add_argument("--eta", type=float, default=None, help="noise ratio of the training pairs")
    b.add_argument("--optimizer", choices=["adam", "sgd"], default=None,
                   help="the expert's optimizer (default adam, lr 0.001; sgd: a default run's expert settings)")
    b.add_argument("--shifts", type=int, default=None, help="shift-and-stitch passes per axis of the default maps")
    b.add_argument("--no-run-default", action="store_true",
                   help="skip the run-default expert row (an expert trained as `mdw run` trains it: DTCL, SGD)")
    b.add_argument("--experts-dir", default="",
                   help="save each trained expert here and reuse one saved with the same settings")
    b.add_argument("--max-test-pairs", type=int, default=None, help="score only the first N test captions")
    b.add_argument("--out", default=None, help="output folder (default docs/benchmarks)")
    b.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; 1 on a shared, loaded CPU)")
    b.set_defaults(func=run_bench)


def bench_config(args):
    """The HeatmapBenchConfig the command line asks for."""
    import dataclasses

    from ..bench import heatmaps as hb
    from ..config import ExpertConfig

    cfg = hb.HeatmapBenchConfig()
    if args.scenes_train:
        cfg.scenes.n_train = args.scenes_train
    if args.epochs:
        cfg.experts.epochs = args.epochs
    if args.dtcl:
        cfg.experts.dtcl = True
    if args.eta is not None:
        cfg.eta = args.eta
    if args.optimizer == "sgd":   # the expert a default run trains
        d = ExpertConfig()
        cfg.experts = dataclasses.replace(cfg.experts, optimizer="sgd", lr=d.lr, grad_clip=d.grad_clip)
    if args.shifts:
        cfg.cam = dataclasses.replace(cfg.cam, shifts=args.shifts)
    cfg.run_default = not args.no_run_default
    cfg.experts_dir = args.experts_dir
    if args.max_test_pairs:
        cfg.max_test_pairs = args.max_test_pairs
    if args.out:
        cfg.out_dir = args.out
    return cfg


def run_bench(args) -> int:
    import torch

    from ..bench import heatmaps as hb

    if args.threads:
        torch.set_num_threads(args.threads)
    _, summary, paths = hb.run(bench_config(args))
    print(f"wrote {', '.join(paths)}; {summary}")
    return 0
