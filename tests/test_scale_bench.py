"""`python -m mdw bench scale` (issue 18) end to end on a few hundred pairs: shards written with the
webdataset package, the data stage and one expert epoch in fresh processes with their peak RssAnon,
the app's open and paging, the table; a second call resumes (measures nothing again)."""
import json
import os

from mdw.bench import scale


def test_bench_scale_measures_each_size_and_resumes(tmp_path):
    cfg = scale.ScaleBenchConfig(sizes=[300], shard_samples=120, batch_size=64, work_dir=str(tmp_path / "work"),
                                 out_dir=str(tmp_path / "out"), app_pages=3)
    rows, paths = scale.run(cfg, log=lambda *a: None)
    assert len(os.listdir(tmp_path / "work" / "shards-300")) == 3 + 1       # 3 shards + done.json
    (row,) = rows
    assert row["images"] == 300 and 250 < row["pairs"] <= 300                # train + dev + test, by key hash
    assert row["data_peak_mib"] > 50 and row["experts_peak_mib"] > row["data_peak_mib"] * 0.5
    assert row["decode_img_per_s"] > 0 and row["expert_epoch_s"] > 0 and row["app_page_max_s"] >= 0
    assert row["run_bytes_per_pair"] >= 32 * 32 * 3 * 300 / row["pairs"]    # at least the images
    assert json.load(open(paths[0]))[0]["pairs"] == row["pairs"] and "RssAnon" in open(paths[2]).read()
    results = [f for f in os.listdir(tmp_path / "work" / "runs-300") if f.endswith(".bench.json")]
    before = os.stat(tmp_path / "work" / "runs-300" / results[0]).st_mtime_ns
    again, _ = scale.run(cfg, log=lambda *a: None)                          # resumes: nothing re-measured
    assert again == rows and os.stat(tmp_path / "work" / "runs-300" / results[0]).st_mtime_ns == before


def test_anon_peak_sees_an_allocation():
    import time

    import mmap

    import numpy as np
    base = scale.AnonPeak.now_kib() / 1024
    with scale.AnonPeak(every=0.005) as mem:
        # 64 MiB of fresh anonymous pages, every page touched (a malloc'd array could reuse pages the
        # process already holds); the sampler gets up to 5 s on a loaded machine to see them
        buf = mmap.mmap(-1, 64 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        np.frombuffer(buf, dtype=np.uint8)[::4096] = 1
        deadline = time.time() + 5
        while mem.peak_mib < base + 60 and time.time() < deadline:
            time.sleep(0.01)
        seen = mem.peak_mib                              # the sampler thread's, before __exit__ reads again
        del buf
    assert seen >= base + 60
