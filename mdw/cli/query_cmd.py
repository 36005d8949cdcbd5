"""`python -m mdw query --run RUN --text "..." | --image PATH`: search a run's retrieval index.

text → top-K images of the clean test split, image → top-K captions, with scores; `--recall`
prints recall@1/5/10 of the whole split; `--build [--model SPEC]` (re)builds index/ first.
"""
from __future__ import annotations

import dataclasses
import json

from ..errors import MDWError


def add_parser(sub, runs_dir: str) -> None:
    p = sub.add_parser("query", help="query a run's FAISS index: text -> images, image -> captions, recall@K")
    p.add_argument("--run", required=True, help="a run id (in --runs) or a run folder")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--text", default=None, help="a caption: find the best-matching images")
    q.add_argument("--image", default=None, help="an image file: find the best-matching captions")
    p.add_argument("--k", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--recall", action="store_true", help="print recall@1/5/10 of the whole split")
    p.add_argument("--build", action="store_true", help="build (or rebuild) the run's index first")
    p.add_argument("--model", default="", help="with --build: expert | expert:<dtcl|plain>[:<track>] | "
                                                  "student:<method>[:<seed>] (default: the run's index.model)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--runs", default=runs_dir)
    p.set_defaults(func=query)


def build(run_dir: str, model: str) -> dict:
    from ..config import RunConfig
    from ..evaluate.index import build_run_index
    from ..progress import progress_bar
    from ..runs.migrate import open_run
    from ..runs.store import read_json

    cfg = RunConfig.from_dict(read_json(open_run(run_dir).config))
    icfg = cfg.index
    if model:
        icfg = dataclasses.replace(icfg, model=model)
    with progress_bar("index", None, None) as report:
        return build_run_index(run_dir, cfg, icfg, report)


def _recall_line(rec: dict) -> str:
    return "  ".join(f"{k} {rec[k]:.1f}" for k in ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10", "rsum"))


def query(args) -> int:
    from ..evaluate.index import RunIndex
    from .score_cmd import resolve_run_dir

    if args.k < 1:
        raise MDWError(f"--k: must be at least 1, got {args.k}")
    if args.model and not args.build:
        raise MDWError("--model: only with --build (an index holds one model's embeddings)")
    if not (args.text is not None or args.image or args.recall or args.build):
        raise MDWError("query: give --text TEXT or --image PATH (or --recall, --build)")
    run_dir = resolve_run_dir(args.run, args.runs)
    if args.build:
        build(run_dir, args.model)
    ri = RunIndex.load(run_dir)
    m = ri.meta
    out = {"run": run_dir, "model": m["model_resolved"], "kind": m["kind"], "split": m["split"],
           "n_images": m["n_images"], "n_captions": m["n_captions"]}
    if args.recall or args.build:
        out["recall"] = ri.recall()
    if args.text is not None:
        out["query"], out["hits"] = {"text": args.text}, ri.query_text(args.text, args.k)
    elif args.image:
        out["query"], out["hits"] = {"image": args.image}, ri.query_image(args.image, args.k)
    if args.json:
        print(json.dumps(out, indent=1, ensure_ascii=False))
        return 0
    print(f"index of {run_dir}: {out['model']}, {out['kind']}, {out['n_images']} images / "
          f"{out['n_captions']} captions ({out['split']} split)")
    if "recall" in out:
        print("recall (%): " + _recall_line(out["recall"]))
    if "hits" in out:
        what = f"text {args.text!r} -> images" if args.text is not None else f"image {args.image} -> captions"
        print(f"{what}, top {args.k}:")
        for h in out["hits"]:
            label = h["key"] if args.text is not None else f"{h['caption']!r}  [{h['key']}]"
            print(f"  {h['rank']:>3}. {h['score']:+.4f}  {label}")
    return 0


def add_bench_parser(bsub) -> None:
    """`python -m mdw bench index` (registered by bench_cmd)."""
    b = bsub.add_parser("index", help="FAISS exact/approximate build and query time, recall; UMAP time")
    b.add_argument("--sizes", default="10000,100000,1000000", help="comma list of index sizes (vectors)")
    b.add_argument("--umap-sizes", default="5000,20000,50000", help="comma list of UMAP sizes (points; '' for none)")
    b.add_argument("--queries", type=int, default=None, help="query vectors (default 300)")
    b.add_argument("--hnsw-max", type=int, default=None, help="no HNSW rows above this many vectors")
    b.add_argument("--threads", type=int, default=1, help="torch / FAISS threads (default 1)")
    b.add_argument("--out", default=None, help="output folder (default docs/benchmarks)")
    b.set_defaults(func=run_index_bench)


def _ints(text: str) -> list:
    try:
        return [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise MDWError(f"expected a comma list of integers, got {text!r}") from None


def run_index_bench(args) -> int:
    from ..bench import index as bench_index

    cfg = bench_index.IndexBenchConfig(sizes=_ints(args.sizes), umap_sizes=_ints(args.umap_sizes),
                                       threads=args.threads)
    if args.queries:
        cfg.queries = args.queries
    if args.hnsw_max is not None:
        cfg.hnsw_max_n = args.hnsw_max
    if args.out:
        cfg.out_dir = args.out
    _, summary, paths = bench_index.run(cfg)
    print(f"wrote {', '.join(paths)}; {summary}")
    return 0
