"""Peak memory of one trajectory-matching gradient, constant-memory (adjoint) vs unrolled, for a
number of student steps N: `python -m mdw.bench.memory N MODE M SIZE` prints the peak (MiB) of a
fresh process (CUDA: max allocated; CPU: peak resident set), so runs do not share an allocator."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import numpy as np
import torch


def _peak_rss_mib() -> float:
    """This process's peak resident set: VmHWM (reset by exec, unlike ru_maxrss on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(syn_steps: int, mode: str, m: int, size: int) -> dict:
    from ..config import ModelConfig
    from ..distill.matching import Student, match_adjoint, match_unrolled
    from ..distill.synset import DistilledSet
    from ..models.presets import build_model

    model = build_model(ModelConfig(), size, seed=0)
    dev = model.device
    student = Student(model)
    images = torch.randint(0, 256, (m, size, size, 3), dtype=torch.uint8)
    syn = DistilledSet.from_real(images, torch.randn(m, model.g0_dim), np.arange(m), lr=0.01).to(dev)
    syn.requires_grad_(True)
    start = model.flat_params().to(dev)
    target = start + 0.01 * torch.randn_like(start)
    batches = [torch.randperm(m, device=dev) for _ in range(syn_steps)]
    base_rss = _peak_rss_mib()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if mode == "adjoint":
        match_adjoint(student, syn, start, target, batches)
    else:
        match_unrolled(student, syn, start, target, batches).backward()
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _peak_rss_mib()
    return {"syn_steps": syn_steps, "mode": mode, "peak_mib": peak, "before_mib": base_rss, "device": dev.type}


def peak_memory(syn_steps: int, mode: str = "adjoint", m: int = 50, size: int = 64) -> dict:
    """Run `measure` in a fresh process and return its result."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-m", "mdw.bench.memory", str(syn_steps), mode, str(m), str(size)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    n, mode, m, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(measure(n, mode, m, size)))
