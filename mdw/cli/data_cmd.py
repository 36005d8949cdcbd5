"""`python -m mdw data inspect SOURCE`: what a data source holds, before any run.
`python -m mdw data verify RUN`: re-read a run's source and compare it with the run's own data."""
from __future__ import annotations

import json
import os

from ..config import SOURCES, DataConfig
from ..data.noise import inject_noise
from ..data.sources import load_source
from ..data.split_check import RUN_SPLITS, empty_splits, split_fix


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="inspect data sources")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("inspect", help="counts per split, noise, sample captions, skipped items")
    p.add_argument("source", help='"scenes", or a path: Flickr8k-style folder, Karpathy JSON, CSV/JSONL, shard folder')
    p.add_argument("--kind", default="auto", choices=("auto",) + SOURCES, help="source kind (default: detect)")
    p.add_argument("--image-root", default="", help="folder image paths are relative to (Karpathy JSON, CSV)")
    p.add_argument("--eta", type=float, default=0.0, help="noise ratio to simulate")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--samples", type=int, default=5, help="sample captions to show")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=inspect)
    v = dsub.add_parser("verify", help="re-read a run's data source and check the run's own data against it")
    v.add_argument("run", help="a run id (in --runs) or a run folder")
    v.add_argument("--runs", default=os.environ.get("MDW_RUNS", "runs"))
    v.set_defaults(func=verify)


def source_config(source: str, kind: str = "auto", image_root: str = "", eta: float = 0.0, seed: int = 0) -> DataConfig:
    if source == "scenes":
        cfg = DataConfig(source="scenes", eta=eta, noise_seed=seed)
    else:
        cfg = DataConfig(source=kind, path=source, image_root=image_root, eta=eta, noise_seed=seed)
    cfg.validate()
    return cfg


def inspect(args) -> int:
    cfg = source_config(args.source, args.kind, args.image_root, args.eta, args.seed)
    ps = load_source(cfg)
    ps, noise = inject_noise(ps, cfg.eta, cfg.noise_seed)
    s = ps.summary(n_examples=args.samples)
    s["noise"] = {"eta": cfg.eta, "seed": cfg.noise_seed, "noisy_pairs": int(len(noise.pairs)),
                  "train_pairs": int(len(ps.pairs_in("train")))}
    s["warnings"] = [f"the {sp} split is empty" + (" (a run needs it: its data stage will stop)" if sp in RUN_SPLITS
                     else " (bench sweep needs it)") + f"; {split_fix(ps.name, sp)}" for sp in empty_splits(ps)]
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"source: {s['name']}")
    print(f"{'split':<8}{'images':>10}{'pairs':>10}")
    for split, c in s["splits"].items():
        print(f"{split:<8}{c['images']:>10}{c['pairs']:>10}")
    for w in s["warnings"]:
        print(f"warning: {w}")
    n = s["noise"]
    print(f"noise: eta={n['eta']} -> {n['noisy_pairs']} of {n['train_pairs']} training pairs mismatched (seed {n['seed']})")
    print("sample captions:")
    for x in s["sample_captions"]:
        print(f"  {x['image']}: {x['caption']}")
    if s["skipped"]:
        print("skipped: " + ", ".join(f"{k}: {v}" for k, v in s["skipped"].items()))
        for x in s["skipped_examples"][:10]:
            print(f"  {x['reason']}: {x['where']}")
    else:
        print("skipped: none")
    print("(images are decoded when a run's data stage caches them; corrupt ones are skipped and counted there)")
    return 0


def verify(args) -> int:
    """Exit 0 when the run's data equals what its source gives now, 1 (listing the differences) when not;
    a source that cannot be read is a DataError (exit 2 through the CLI)."""
    from ..config import RunConfig
    from ..data.run_data import verify_run_data
    from ..runs.layout import RunLayout
    from ..runs.store import read_json
    from .score_cmd import resolve_run_dir

    lay = RunLayout(resolve_run_dir(args.run, args.runs))
    cfg = RunConfig.from_dict(read_json(lay.config))
    problems = verify_run_data(lay, cfg.data)
    if problems:
        print(f"{lay.root}: the run's data differs from its source ({cfg.data.path or cfg.data.source}):")
        for p in problems:
            print(f"  {p}")
        return 1
    print(f"{lay.root}: the run's data matches its source ({cfg.data.path or cfg.data.source})")
    return 0
