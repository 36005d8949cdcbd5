"""`python -m mdw run ...` (start or resume a run in this process) and `python -m mdw runs ...`."""
from __future__ import annotations

import json

from ..config import RunConfig, apply_overrides
from ..pipeline import run_pipeline
from ..runs.context import run_in_context
from ..runs.store import RunStore


def add_parsers(sub, runs_dir: str) -> None:
    p = sub.add_parser("run", help="run the pipeline (data → ...) for a config, or resume a run")
    p.add_argument("--config", help="a RunConfig JSON file (default: the built-in defaults, scenes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.eta=0.4 (repeatable)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue a run: finished stages are not redone")
    p.add_argument("--runs", default=runs_dir, help="the runs folder (default: $MDW_RUNS or ./runs)")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage (e.g. experts); resume later for the rest")
    p.add_argument("--no-bars", action="store_true", help="no progress bars")
    p.set_defaults(func=run)

    r = sub.add_parser("runs", help="list or cancel runs")
    rsub = r.add_subparsers(dest="runs_command", required=True)
    lst = rsub.add_parser("list", help="runs with their state")
    lst.add_argument("--runs", default=runs_dir)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=runs_list)
    c = rsub.add_parser("cancel", help="cancel a queued or running run")
    c.add_argument("run_id")
    c.add_argument("--runs", default=runs_dir)
    c.set_defaults(func=runs_cancel)


def run(args) -> int:
    store = RunStore(args.runs)
    if args.resume:
        if args.config or args.set:
            print("note: --config/--set are ignored with --resume (the run keeps its config.json)")
        run_id = args.resume
        store.read_config(run_id)  # validates the id and that the run exists
    else:
        cfg = RunConfig.load(args.config) if args.config else RunConfig().validate()
        cfg = apply_overrides(cfg, args.set)
        run_id = store.create(cfg.to_dict(), name=cfg.name)
        print(f"run {run_id} in {store.run_dir(run_id)}")
    show = False if args.no_bars else None
    code = run_in_context(store, run_id, lambda ctx: run_pipeline(ctx, show_bars=show, until=args.until))
    st = store.read_status(run_id)
    print(f"run {run_id}: {st['state']}" + (f" ({st.get('error')})" if st.get("error") else ""))
    return code


def runs_list(args) -> int:
    runs = RunStore(args.runs).list_runs()
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print(f"no runs in {args.runs}")
        return 0
    print(f"{'run':<44}{'state':<11}{'stage':<10}{'progress':>9}  started")
    for r in runs:
        print(f"{r['id']:<44}{r.get('state', '?'):<11}{(r.get('stage') or '-'):<10}"
              f"{100 * float(r.get('progress') or 0):>8.0f}%  {r.get('started') or '-'}")
    return 0


def runs_cancel(args) -> int:
    from ..runs.manager import RunManager

    st = RunManager(args.runs).cancel(args.run_id)
    print(f"run {args.run_id}: {st.get('state')}")
    return 0
