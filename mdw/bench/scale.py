"""`python -m mdw bench scale`: how the data path grows with the data set. For each size N (pairs):
generated webdataset shards (scenes images at a small size, one caption an image, as img2dataset
writes CC3M) → the data stage → one expert epoch with its scoring pass → the app opening the run
and paging the Noisy pairs table. Each stage runs in a fresh process that samples its own anonymous
resident memory (RssAnon: what the process allocated, not the page cache of the files it maps).
Everything is kept in --work, so a second call resumes where the first stopped.

The text encoder is a small random-init BERT saved in the work folder (the bench measures the data
path; MiniLM would spend most of an hour on a million distinct captions here), the image tower
cpu-small at the shards' size.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

from .report import markdown_table, write_results

STAGES = ("data", "experts")


@dataclass
class ScaleBenchConfig:
    sizes: list = field(default_factory=lambda: [10_000, 100_000, 1_000_000])   # pairs (= images)
    image_size: int = 32          # px of the shards' images and of the run
    shard_samples: int = 10_000   # samples a shard
    eta: float = 0.2
    batch_size: int = 256
    threads: int = 1
    work_dir: str = ""            # shards, runs, cache, the text encoder; kept (default: a temp folder)
    out_dir: str = os.path.join("docs", "benchmarks")
    app_pages: int = 10           # Noisy-pairs pages fetched after opening the run
    note: str = ""                # conditions of the measurement, printed under the table


# ----- memory ---------------------------------------------------------------------------------------

class AnonPeak:
    """Samples /proc/self/status RssAnon every `every` seconds in a thread; .peak_mib after stop()."""

    def __init__(self, every: float = 0.02):
        self.every, self.peak_kib, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now_kib() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.now_kib())
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, self.now_kib())

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


# ----- inputs -----------------------------------------------------------------------------------

def write_shards(folder: str, n: int, image_size: int, shard_samples: int) -> dict:
    """n scenes samples (JPEG + caption) in folder/shard-%05d.tar through webdataset.ShardWriter;
    folder/done.json marks a complete set (kept: a second call returns it)."""
    import io

    import webdataset as wds

    from ..config import ScenesConfig
    from ..data.scenes import make_scenes

    done = os.path.join(folder, "done.json")
    if os.path.isfile(done):
        with open(done, encoding="utf-8") as f:
            return json.load(f)
    os.makedirs(folder, exist_ok=True)
    t0 = time.time()
    with wds.ShardWriter(os.path.join(folder, "shard-%05d.tar"), maxcount=shard_samples, verbose=0) as sink:
        for s in range(0, n, shard_samples):
            count = min(shard_samples, n - s)
            ps = make_scenes(ScenesConfig(n_train=count, n_dev=0, n_test=0, seed=s // shard_samples,
                                          min_captions=1, max_captions=1))
            for i in range(count):
                buf = io.BytesIO()
                ps.images.open(i, image_size).save(buf, format="JPEG", quality=90)
                sink.write({"__key__": f"{s + i:08d}", "jpg": buf.getvalue(), "txt": ps.captions[i]})
    info = {"samples": n, "seconds": round(time.time() - t0, 1),
            "bytes": sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".tar"))}
    with open(done, "w", encoding="utf-8") as f:
        json.dump(info, f)
    return info


def tiny_text_encoder(path: str, seed: int = 5) -> str:
    """A random-init 2-layer BERT (hidden 32) with MiniLM's WordPiece tokenizer, saved as a Hugging
    Face folder at `path` once; returns the path (for model.text = "hf:<path>")."""
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    import torch
    from transformers import BertConfig, BertModel

    from ..models.text import load_tokenizer
    tok = load_tokenizer()
    torch.manual_seed(seed)
    bert = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64)).eval()
    bert.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def run_config(cfg: ScaleBenchConfig, shards: str, text: str, cache: str):
    from ..config import DataConfig, ExpertConfig, ModelConfig, RunConfig
    return RunConfig(name="scale", cache_dir=cache,
                     data=DataConfig(source="webdataset", path=shards, image_size=cfg.image_size, eta=cfg.eta),
                     model=ModelConfig(preset="cpu-small", text=f"hf:{text}", device="cpu"),
                     experts=ExpertConfig(epochs=1, batch_size=cfg.batch_size))


# ----- one stage in a fresh process -------------------------------------------------------------

def measure_stage(runs: str, run_id: str, stage: str, threads: int) -> dict:
    """(in the fresh process) run the run's stages up to `stage`; wall seconds and peak RssAnon."""
    import torch

    from ..pipeline import run_pipeline
    from ..runs.context import run_in_context
    from ..runs.store import RunStore
    torch.set_num_threads(threads)
    store = RunStore(runs)
    with AnonPeak() as mem:
        t0 = time.time()
        code = run_in_context(store, run_id, lambda ctx: run_pipeline(ctx, show_bars=False, until=stage))
        wall = time.time() - t0
    status = store.read_status(run_id)
    if code != 0:
        raise RuntimeError(f"bench scale: stage {stage} failed: {status.get('error')}")
    return {"stage": stage, "seconds": round(wall, 1), "stage_seconds": status["stage_seconds"].get(stage),
            "peak_anon_mib": round(mem.peak_mib, 1)}


def measure_app(runs: str, run_id: str, pages: int) -> dict:
    """(in the fresh process) open the run as the app does and page the Noisy pairs table."""
    from ..runs.view import RunView
    from ..views.noisy import first_flagged_pair, pair_detail, pairs_page
    for name in ("mdw.heatmaps.stage", "mdw.evaluate.detection"):   # a running app has these loaded already
        importlib.import_module(name)

    with AnonPeak() as mem:
        t0 = time.time()
        view = RunView(os.path.join(runs, run_id))
        page = pairs_page(view, "all", "all", 0.0, 1.0, "clean", False, 1, 50)
        pair = first_flagged_pair(view)
        pair_detail(view, pair)
        t_open = time.time() - t0
        times = []
        for k in range(pages):
            t1 = time.time()
            at = 1 + (k * 7919) % max(page.n_pages, 1)
            pairs_page(view, "flagged" if k % 2 else "all", "all", 0.0, 1.0, ("clean", "pair")[k % 2], bool(k % 3),
                       at, 50)
            times.append(time.time() - t1)
    return {"stage": "app", "open_seconds": round(t_open, 3), "page_seconds_max": round(max(times), 3),
            "page_seconds_median": round(sorted(times)[len(times) // 2], 3), "total_pairs": page.total,
            "peak_anon_mib": round(mem.peak_mib, 1)}


def in_fresh_process(*args: str) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-m", "mdw.bench.scale", *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"bench scale {' '.join(args)}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def du(path: str) -> int:
    """Bytes of the files under path (hard links counted once)."""
    seen, total = set(), 0
    for d, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(d, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


# ----- the bench ----------------------------------------------------------------------------------

def run(cfg: ScaleBenchConfig, log=print) -> tuple:
    from ..runs.layout import RunLayout
    from ..runs.store import RunStore, read_json
    work = cfg.work_dir or tempfile.mkdtemp(prefix="mdw-bench-scale-")
    text = tiny_text_encoder(os.path.join(work, "tiny-bert"))
    rows = []
    for n in cfg.sizes:
        shards = os.path.join(work, f"shards-{n}")
        info = write_shards(shards, n, cfg.image_size, cfg.shard_samples)
        log(f"N={n}: shards ready ({info['seconds']} s to write, {info['bytes'] / n:.0f} B a pair)")
        runs = os.path.join(work, f"runs-{n}")
        store = RunStore(runs)
        ids = [r["id"] for r in store.list_runs()]
        run_id = ids[0] if ids else store.create(run_config(cfg, shards, text, os.path.join(work, f"cache-{n}")).to_dict(),
                                                 name=f"scale-{n}")
        results_path = os.path.join(runs, f"{run_id}.bench.json")
        done = read_json(results_path) if os.path.isfile(results_path) else {}
        for stage in STAGES:
            if stage not in done:
                done[stage] = in_fresh_process("stage", runs, run_id, stage, str(cfg.threads))
                _save(results_path, done)
            log(f"N={n}: {stage}: {done[stage]}")
        if "app" not in done:
            done["app"] = in_fresh_process("app", runs, run_id, str(cfg.app_pages))
            _save(results_path, done)
        log(f"N={n}: app: {done['app']}")
        rec = read_json(RunLayout(os.path.join(runs, run_id)).data_record)
        n_images = rec["n_images"]
        d, e, a = done["data"], done["experts"], done["app"]
        rows.append({"pairs": rec["n_pairs"], "images": n_images,
                     "data_s": d["stage_seconds"], "decode_img_per_s": round(n_images / max(d["stage_seconds"], 1e-9)),
                     "data_peak_mib": d["peak_anon_mib"],
                     "expert_epoch_s": e["stage_seconds"], "experts_peak_mib": e["peak_anon_mib"],
                     "app_open_s": a["open_seconds"], "app_page_max_s": a["page_seconds_max"],
                     "app_peak_mib": a["peak_anon_mib"],
                     "run_bytes_per_pair": round(du(os.path.join(runs, run_id)) / rec["n_pairs"], 1),
                     "shard_bytes_per_pair": round(info["bytes"] / n, 1)})
    return rows, write_results(cfg.out_dir, "scale", rows, asdict(cfg), _markdown(rows, cfg))


def _save(path: str, obj: dict) -> None:
    from ..runs.store import atomic_write_json
    atomic_write_json(path, obj)


def _markdown(rows: list, cfg: ScaleBenchConfig) -> str:
    cols = list(rows[0]) if rows else []
    lines = ["# Scale: the data path from 10k to 1M pairs (`python -m mdw bench scale`)", "",
             f"Synthetic webdataset shards (scenes at {cfg.image_size} px, JPEG, one caption an image, "
             f"{cfg.shard_samples} samples a shard), η = {cfg.eta}; the data stage (stream, decode, run data), "
             f"one DTCL expert epoch with its scoring pass (cpu-small at {cfg.image_size} px, batch "
             f"{cfg.batch_size}, a random 2-layer BERT as g0), then the app opening the run and paging the Noisy "
             f"pairs table ({cfg.app_pages} pages of 50). {cfg.threads} thread(s). Peak memory: the stage "
             "process's anonymous resident memory (RssAnon, sampled every 20 ms), which leaves out the page "
             "cache of the memory-mapped run files." + (f" {cfg.note}" if cfg.note else ""), "",
             markdown_table(rows, cols)]
    if len(rows) >= 2:
        lo, hi = rows[0], rows[-1]
        for key in ("data_peak_mib", "experts_peak_mib", "app_peak_mib"):
            lines.append(f"- {key}: {lo[key]} → {hi[key]} MiB from {lo['pairs']} to {hi['pairs']} pairs "
                         f"(×{hi[key] / max(lo[key], 1e-9):.2f}; target < ×2)")
        lines.append(f"- decoding: {min(r['decode_img_per_s'] for r in rows)} images/s at the slowest (target ≥ 500)")
        lines.append(f"- app: opening {hi['app_open_s']} s, slowest page {hi['app_page_max_s']} s at "
                     f"{hi['pairs']} pairs (target < 2 s)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "stage":
        print(json.dumps(measure_stage(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
    elif kind == "app":
        print(json.dumps(measure_app(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
