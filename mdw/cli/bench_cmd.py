"""`python -m mdw bench NAME`: benchmarks that compare methods in one run and write tables."""
from __future__ import annotations

from ..bench import detection
from ..config import parse_setting
from . import heatmap_cmd
from . import query_cmd


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
    s = bsub.add_parser("distill", help="every distillation method and baseline, several M and eta, in one table")
    s.add_argument("--datasets", default="scenes:20,50,100;flickr8k:100,200",
                   help="DATASET:M,M;DATASET:M (datasets: scenes, flickr8k)")
    s.add_argument("--etas", default="0,0.4")
    s.add_argument("--methods", default=None, help="comma list (default: all)")
    s.add_argument("--iterations", type=int, default=None, help="distillation iterations")
    s.add_argument("--seeds", type=int, default=None, help="student seeds")
    s.add_argument("--student-steps", type=int, default=None)
    s.add_argument("--syn-batch", type=int, default=None, help="pairs per student step while matching (0: all M)")
    s.add_argument("--student-batch", type=int, default=None, help="evaluation students' minibatch (0: all M)")
    s.add_argument("--cross-arch", default=None, help="a second student preset, e.g. cpu-wide")
    s.add_argument("--alpha-scale", type=float, default=None,
                   help="distilled sets' students step at this multiple of their learned α (default 1)")
    s.add_argument("--ceo-floor", type=float, default=None,
                   help="CEO's λ (distill.ceo_floor) for every distilled set (default: the config's)")
    s.add_argument("--syn-steps", type=int, default=None,
                   help="N, student steps per matching (distill.syn_steps), for every distilled set (default: the config's)")
    s.add_argument("--distill", action="append", default=[], metavar="KEY=VALUE",
                   help="another distill setting for every distilled set, e.g. --distill expert_epochs=3 (repeatable; "
                        "values as JSON, else text)")
    s.add_argument("--scenes-train", type=int, default=None)
    s.add_argument("--run-seed", type=int, default=None,
                   help="run seed: the experts' initialisation and the distilled sets' draws (default 0); with --merge, "
                        "rows of other run seeds stay beside these and the table gives the spread across runs")
    s.add_argument("--epochs", default=None, help="expert epochs per data set, DATASET:E;DATASET:E "
                   "(default scenes:6;flickr8k:3)")
    s.add_argument("--flickr8k", default=None, help="path of the Flickr8k folder")
    s.add_argument("--runs", default="", help="keep the bench's run folders here (default: a temp folder)")
    s.add_argument("--out", default=None)
    s.add_argument("--threads", type=int, default=0)
    s.add_argument("--merge", action="store_true", help="keep earlier rows in --out of cases this run does not measure")
    s.add_argument("--note", default="", help="recorded with this run's rows in the table's provenance")
    s.add_argument("--memory-steps", default=None, help="syn_steps for the memory rows (default 4,16; '' skips them)")
    s.set_defaults(func=run_distill)
    w = bsub.add_parser("sweep", help="distillation settings compared on the DEV split of one finished run")
    w.add_argument("--run", required=True, help="a run folder with trained experts")
    w.add_argument("--variants", required=True, help="JSON object or file: {name: {distill: {...}, evals: {...}}}")
    w.add_argument("--seeds", type=int, default=3)
    w.add_argument("--out", default="docs/benchmarks")
    w.add_argument("--name", default="distill_sweep", help="output file stem")
    w.add_argument("--threads", type=int, default=0)
    w.add_argument("--merge", action="store_true", help="keep earlier rows in --out of variants not re-measured")
    w.add_argument("--note", default="")
    w.set_defaults(func=run_sweep)
    query_cmd.add_bench_parser(bsub)
    m = bsub.add_parser("demo", help="the demo run end to end in fresh processes: stage times, total, app clicks")
    m.add_argument("--config", default=None, help="run config (default assets/configs/demo.json)")
    m.add_argument("--repeats", type=int, default=None, help="fresh runs timed (default 3)")
    m.add_argument("--app-repeats", type=int, default=None, help="clicks per tab in the browser (0: skip)")
    m.add_argument("--out", default=None)
    m.add_argument("--threads", type=int, default=None, help="threads of the timed runs (default: torch's)")
    m.add_argument("--keep", default=None, help="keep the runs here (r0/runs, r1/runs, ...; r*/cache) instead of a temp folder")
    m.set_defaults(func=run_demo)
    c = bsub.add_parser("scale", help="10k to 1M pairs from webdataset shards: data stage, one expert epoch, the app")
    c.add_argument("--sizes", default="10000,100000,1000000", help="pairs, comma-separated")
    c.add_argument("--work", default="", help="keep shards, runs and cache here (a second call resumes)")
    c.add_argument("--image-size", type=int, default=32)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--out", default=None)
    c.add_argument("--note", default="", help="conditions of the measurement, printed with the table")
    c.set_defaults(func=run_scale)


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


def run_distill(args) -> int:
    from ..bench import distill

    set_threads(args.threads)
    cfg = distill.DistillBenchConfig()
    cfg.ms = {ds.split(":")[0].strip(): [int(m) for m in ds.split(":")[1].split(",")]
              for ds in args.datasets.split(";") if ds.strip()}
    cfg.etas = [float(x) for x in args.etas.split(",")]
    cfg.merge, cfg.note = args.merge, args.note
    if args.memory_steps is not None:
        cfg.memory_steps = [int(x) for x in args.memory_steps.split(",") if x.strip()]
    for name in ("syn_batch", "student_batch"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    for name, value in (("methods", args.methods and [m.strip() for m in args.methods.split(",")]),
                        ("iterations", args.iterations), ("seeds", args.seeds), ("student_steps", args.student_steps),
                        ("cross_arch", args.cross_arch), ("flickr8k_path", args.flickr8k), ("out_dir", args.out),
                        ("alpha_scale", args.alpha_scale)):
        if value:
            setattr(cfg, name, value)
    if args.ceo_floor is not None:
        cfg.ceo_floor = args.ceo_floor
    if args.syn_steps is not None:
        cfg.syn_steps = args.syn_steps
    cfg.distill = dict(parse_setting(item, "--distill") for item in args.distill)
    if args.scenes_train:
        cfg.scenes.n_train = args.scenes_train
    if args.run_seed is not None:
        cfg.seed = args.run_seed
    if args.epochs:
        cfg.epochs = dict(cfg.epochs, **distill.parse_epochs(args.epochs))
    cfg.runs_dir = args.runs
    _, summary, paths = distill.run(cfg)
    print(f"wrote {', '.join(paths)}")
    print("\n".join(summary))
    return 0


def run_sweep(args) -> int:
    from ..bench import sweep

    set_threads(args.threads)
    cfg = sweep.SweepConfig(run_dir=args.run, variants=sweep.read_variants(args.variants), seeds=args.seeds,
                            out_dir=args.out, name=args.name, merge=args.merge, note=args.note)
    _, paths = sweep.run(cfg)
    print(f"wrote {', '.join(paths)}")
    return 0


def run_demo(args) -> int:
    from ..bench import demo

    cfg = demo.DemoBenchConfig()
    for name, value in (("config", args.config), ("repeats", args.repeats),
                        ("app_repeats", args.app_repeats), ("out_dir", args.out), ("threads", args.threads), ("keep", args.keep)):
        if value is not None:
            setattr(cfg, name, value)
    med, paths = demo.run(cfg)
    print(f"wrote {', '.join(paths)}; median {med}")
    return 0


def run_scale(args) -> int:
    from ..bench import scale

    cfg = scale.ScaleBenchConfig(sizes=[int(x) for x in args.sizes.split(",") if x.strip()], work_dir=args.work,
                                 image_size=args.image_size, threads=args.threads, note=args.note)
    if args.out:
        cfg.out_dir = args.out
    _, paths = scale.run(cfg)
    print(f"wrote {', '.join(paths)}")
    return 0
