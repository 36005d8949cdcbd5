"""`python -m mdw bench NAME`: benchmarks that compare methods in one run and write tables."""
from __future__ import annotations

from ..bench import detection
from . import heatmap_cmd


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="benchmarks (tables to docs/benchmarks/)")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    d = bsub.add_parser("detection", help="DTCL vs small-loss vs similarity detection, expert recall, every eta")
    d.add_argument("--datasets", default="scenes,flickr8k", help="comma list: scenes, flickr8k")
    d.add_argument("--etas", default="0,0.2,0.4,0.6,0.8")
    d.add_argument("--epochs", type=int, default=None, help="expert epochs on scenes")
    d.add_argument("--flickr8k-epochs", type=int, default=None)
    d.add_argument("--flickr8k", default=None, help="path of the Flickr8k folder")
    d.add_argument("--scenes-train", type=int, default=None, help="scenes training images")
    d.add_argument("--out", default=None, help="output folder (default docs/benchmarks)")
    d.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    d.add_argument("--merge", action="store_true", help="keep other data sets' rows already in the output")
    d.set_defaults(func=run_detection)
    heatmap_cmd.add_bench_parser(bsub)


def set_threads(n: int) -> None:
    if n:
        import torch
        torch.set_num_threads(n)


def run_detection(args) -> int:
    set_threads(args.threads)
    cfg = detection.DetectionBenchConfig()
    cfg.datasets = [s.strip() for s in args.datasets.split(",") if s.strip()]
    cfg.etas = [float(x) for x in args.etas.split(",")]
    if args.epochs:
        cfg.experts.epochs = args.epochs
    if args.flickr8k_epochs:
        cfg.flickr8k_epochs = args.flickr8k_epochs
    if args.flickr8k:
        cfg.flickr8k_path = args.flickr8k
    if args.scenes_train:
        cfg.scenes.n_train = args.scenes_train
    if args.out:
        cfg.out_dir = args.out
    cfg.merge = args.merge
    _, summary, paths = detection.run(cfg)
    print(f"wrote {', '.join(paths)}; {summary}")
    return 0
