"""A run's own data (data/images.npy + data/table): written once by the data stage, read without
the source or the cache, verified against the source, format-1 data upgraded, moved runs resumed."""
import csv
import os
import shutil

import numpy as np
import pytest

from helpers import png_bytes
from mdw.config import DataConfig
from mdw.data.prepare import prepare
from mdw.data.columns import StringColumn, save_strings
from mdw.data.run_data import (RunTable, open_run_data, upgrade_format1_data,
                               verify_run_data, write_run_data)
from mdw.errors import DataError
from mdw.runs.layout import RunLayout


def csv_source(folder, n_images=40, captions_per_image=3, seed=0):
    """A CSV source: random-noise PNGs and captions, 70/15/15 % train/dev/test by image."""
    os.makedirs(folder / "img", exist_ok=True)
    rows = []
    for i in range(n_images):
        (folder / "img" / f"{i:03d}.png").write_bytes(png_bytes(seed * 1000 + i, 24))
        split = "train" if i < 0.7 * n_images else ("dev" if i < 0.85 * n_images else "test")
        for k in range(captions_per_image):
            rows.append({"image": f"img/{i:03d}.png", "caption": f"pattern {i} seen the {k}th way ✓", "split": split})
    with open(folder / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image", "caption", "split"])
        w.writeheader()
        w.writerows(rows)
    return str(folder / "pairs.csv")


def test_string_column_round_trips_any_text(tmp_path):
    texts = ["", "a", "naïve café", "emoji 🐕", "lone \udcff surrogate", "tab\tand\nnewline", "x" * 5000]
    save_strings(str(tmp_path), "t", texts)
    col = StringColumn(str(tmp_path), "t")
    assert len(col) == len(texts) and col.to_list() == texts
    assert col[3] == texts[3] and col[-1] == texts[-1] and col[1:3] == texts[1:3] and list(col) == texts
    with pytest.raises(IndexError):
        col[len(texts)]
    save_strings(str(tmp_path), "e", ["", ""])                 # no bytes at all
    assert StringColumn(str(tmp_path), "e").to_list() == ["", ""]


def test_run_data_is_the_prepared_data_and_needs_neither_source_nor_cache(tmp_path):
    cfg = DataConfig(source="csv", path=csv_source(tmp_path / "src"), image_size=16, eta=0.3, noise_seed=1)
    p = prepare(cfg, str(tmp_path / "cache"))
    lay = RunLayout(tmp_path / "run")
    record = write_run_data(lay, p, cfg)
    assert record["n_pairs"] == p.pairs.n_pairs == 120 and record["noise"]["count"] == len(p.noise.pairs) > 0
    assert record["images_stored_as"] == "link"        # same file system: a hard link, no second copy
    assert os.stat(lay.images).st_ino == os.stat(p.images_path).st_ino
    shutil.rmtree(tmp_path / "src")
    shutil.rmtree(tmp_path / "cache")
    q = open_run_data(lay)
    a, b = p.pairs, q.pairs
    assert b.captions == a.captions and b.n_images == a.n_images
    for name in ("pair_image", "true_image", "is_noisy", "image_split"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert [b.images.key(i) for i in range(b.n_images)] == [a.images.key(i) for i in range(a.n_images)]
    assert np.array_equal(np.asarray(q.images), np.asarray(p.images)) and q.images.shape == (40, 16, 16, 3)
    assert isinstance(q.images, np.memmap) and q.fingerprint == p.fingerprint
    assert np.array_equal(q.noise.pairs, p.noise.pairs) and np.array_equal(q.noise.images, p.noise.images)
    assert np.array_equal(np.asarray(b.images.open(5, 16)), np.asarray(p.images[5]))
    t = RunTable(lay)                                   # the app's view: a few rows, memory-mapped
    assert t.captions[7] == a.captions[7] and int(t.pair_image[7]) == int(a.pair_image[7])


def test_scenes_ground_truth_travels_with_the_run(tmp_path):
    from mdw.config import ScenesConfig
    cfg = DataConfig(source="scenes", image_size=16, scenes=ScenesConfig(n_train=12, n_dev=3, n_test=3))
    p = prepare(cfg, str(tmp_path / "cache"))
    lay = RunLayout(tmp_path / "run")
    write_run_data(lay, p, cfg)
    q = open_run_data(lay)
    assert q.pairs.boxes == p.pairs.boxes and q.pairs.word_objects == p.pairs.word_objects


def test_incomplete_run_data_is_a_named_error(tmp_path):
    lay = RunLayout(tmp_path / "run")
    with pytest.raises(DataError, match="data/pairs.json"):
        open_run_data(lay)


def test_verify_finds_what_changed_in_the_source(tmp_path):
    path = csv_source(tmp_path / "src")
    cfg = DataConfig(source="csv", path=path, image_size=16)
    lay = RunLayout(tmp_path / "run")
    write_run_data(lay, prepare(cfg, str(tmp_path / "cache")), cfg)
    assert verify_run_data(lay, cfg) == []
    (tmp_path / "src" / "img" / "004.png").write_bytes(png_bytes(999, 24))      # one image replaced
    problems = verify_run_data(lay, cfg)
    assert any(p.startswith("images: 1 differ, first 'img/004.png'") for p in problems), problems
    with open(path, encoding="utf-8") as f:
        text = f.read()
    (tmp_path / "src" / "pairs.csv").write_text(text.replace("pattern 3 seen the 1th", "pattern 3 seen the 9th"),
                                                encoding="utf-8")
    assert any(p.startswith("captions: 1 differ") for p in verify_run_data(lay, cfg))
    shutil.rmtree(tmp_path / "src")
    with pytest.raises(DataError):
        verify_run_data(lay, cfg)


def test_data_verify_cli(tmp_path, capsys):
    from mdw.cli.main import main
    from mdw.config import RunConfig
    from mdw.runs.store import atomic_write_json
    path = csv_source(tmp_path / "src")
    cfg = RunConfig(data=DataConfig(source="csv", path=path, image_size=16))
    lay = RunLayout(tmp_path / "run")
    write_run_data(lay, prepare(cfg.data, str(tmp_path / "cache")), cfg.data)
    atomic_write_json(lay.config, cfg.to_dict())
    assert main(["data", "verify", str(lay.root)]) == 0 and "matches its source" in capsys.readouterr().out
    (tmp_path / "src" / "img" / "010.png").write_bytes(png_bytes(998, 24))
    assert main(["data", "verify", str(lay.root)]) == 1 and "img/010.png" in capsys.readouterr().out


def format1_record(p, cfg) -> dict:
    """data/pairs.json as format 1 wrote it (every pair in JSON; no table, no images.npy)."""
    ps = p.pairs
    return {"source": ps.name, "config": {"source": cfg.source, "path": cfg.path, "image_root": cfg.image_root,
                                          "image_size": cfg.image_size},
            "fingerprint": p.fingerprint, "counts": ps.counts(), "skipped": ps.skipped,
            "skipped_examples": ps.skipped_examples, "noise": p.noise.to_dict(),
            "images": {"key": [ps.images.key(i) for i in range(ps.n_images)], "split": ps.image_split.tolist()},
            "pairs": {"caption": list(ps.captions), "image": ps.pair_image.tolist(),
                      "true_image": ps.true_image.tolist(), "is_noisy": ps.is_noisy.astype(int).tolist()}}


def test_format1_data_is_upgraded_from_its_source(tmp_path):
    from mdw.config import RunConfig
    from mdw.runs.store import atomic_write_json
    cfg = RunConfig(data=DataConfig(source="csv", path=csv_source(tmp_path / "src"), image_size=16, eta=0.2),
                    cache_dir=str(tmp_path / "cache"))
    p = prepare(cfg.data, cfg.resolved_cache_dir())
    lay = RunLayout(tmp_path / "run")
    atomic_write_json(lay.config, cfg.to_dict())
    atomic_write_json(lay.data_record, format1_record(p, cfg.data))
    assert upgrade_format1_data(lay) is True and upgrade_format1_data(lay) is False   # once
    # an upgrade killed after the table landed but before the new pairs.json: done again on the next open
    atomic_write_json(lay.data_record, format1_record(p, cfg.data))
    assert upgrade_format1_data(lay) is True and "pairs" not in RunTable(lay).record
    q = open_run_data(lay)
    assert q.pairs.captions == p.pairs.captions and np.array_equal(q.pairs.pair_image, p.pairs.pair_image)
    assert "pairs" not in RunTable(lay).record
    # a format-1 run whose source is gone cannot be upgraded: the error names the source
    other = RunLayout(tmp_path / "run2")
    atomic_write_json(other.config, cfg.to_dict())
    atomic_write_json(other.data_record, format1_record(p, cfg.data))
    shutil.rmtree(tmp_path / "src")
    with pytest.raises(DataError, match="needs the source once"):
        upgrade_format1_data(other)


@pytest.mark.slow
def test_moved_run_without_source_or_cache_opens_every_tab_and_resumes(tmp_path, monkeypatch):
    """A run folder moved to another path, its source folder renamed and the cache emptied: every tab
    still opens it, and its remaining stages (index, projection) finish."""
    from app.context import AppContext
    from app import tab_audit, tab_correspondence, tab_embedding, tab_evolution, tab_noisy, tab_retrieval, tab_runs
    from helpers import run_tiny

    path = csv_source(tmp_path / "src", n_images=60)
    monkeypatch.setenv("MDW_CACHE", str(tmp_path / "cache"))
    store, run_id, code = run_tiny(tmp_path, "data.source=csv", f"data.path={path}", "projection.max_points=200",
                                   until="evaluate")
    assert code == 0
    os.makedirs(tmp_path / "elsewhere")
    shutil.move(store.run_dir(run_id), tmp_path / "elsewhere" / run_id)
    os.rename(tmp_path / "src", tmp_path / "src-renamed")
    shutil.rmtree(tmp_path / "cache")
    monkeypatch.setenv("MDW_CACHE", str(tmp_path / "fresh-cache"))
    ctx = AppContext(str(tmp_path / "elsewhere"))
    assert "evaluate" in tab_runs.status_markdown(ctx.view(run_id).status())
    pair = tab_noisy.first_pair(ctx, run_id)
    image, desc, grid, _ = tab_noisy.show_pair(ctx, run_id, pair)
    assert image is not None and f"pair {pair}" in desc and "pattern" in desc and grid is not None
    assert tab_correspondence.p_figure(ctx, run_id).data[0].type == "heatmap"
    img, nearest, matches, current, *_ = tab_audit.show(ctx, run_id, 0)
    assert img is not None and nearest and "pattern" in nearest[0][2] and "distilled pair **0**" in current
    *figs, info = tab_evolution.curve_figures(ctx, run_id)
    assert "snapshots: iterations" in info and all(f.data for f in figs)

    from mdw.pipeline import run_pipeline
    from mdw.runs.context import run_in_context
    from mdw.runs.store import RunStore
    moved = RunStore(str(tmp_path / "elsewhere"))
    assert run_in_context(moved, run_id, lambda c: run_pipeline(c)) == 0
    assert moved.read_status(run_id)["stages_done"][-2:] == ["index", "projection"]
    query, gallery, _ = tab_retrieval.opened(ctx, run_id, "", 5)
    assert query.startswith("pattern") and len(gallery) == 5
    pts = tab_embedding.points(ctx, run_id)
    assert pts is not None and len(pts.x) > 0
    assert not os.path.exists(tmp_path / "src")


def test_verify_names_an_image_moved_to_another_split(tmp_path):
    """The fingerprint covers images and captions, not the splits: an image the run trained on that
    the source now puts in test must not be reported as matching."""
    path = csv_source(tmp_path / "src")
    cfg = DataConfig(source="csv", path=path, image_size=16)
    lay = RunLayout(tmp_path / "run")
    write_run_data(lay, prepare(cfg, str(tmp_path / "cache")), cfg)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    moved = [ln.replace(",train", ",test") if ln.startswith("img/002.png,") else ln for ln in lines]
    (tmp_path / "src" / "pairs.csv").write_text("\n".join(moved) + "\n", encoding="utf-8")
    problems = verify_run_data(lay, cfg)
    assert any(p.startswith("splits: 1 image") and "img/002.png" in p for p in problems), problems


def test_data_stage_rerun_removes_what_a_killed_one_left(tmp_path):
    """A data stage killed half way leaves data/.table-* and data/images.npy.tmp-*; the next one
    (the resume) removes them."""
    path = csv_source(tmp_path / "src", n_images=20)
    cfg = DataConfig(source="csv", path=path, image_size=16)
    lay = RunLayout(tmp_path / "run")
    os.makedirs(lay.data_dir)
    os.makedirs(os.path.join(lay.data_dir, ".table-abc123"))
    np.save(os.path.join(lay.data_dir, ".table-abc123", "pair_image.npy"), np.arange(3))
    with open(f"{os.fspath(lay.images)}.tmp-99999", "wb") as f:
        f.write(b"\0" * 1000)
    write_run_data(lay, prepare(cfg, str(tmp_path / "cache")), cfg)
    assert sorted(os.listdir(lay.data_dir)) == ["images.npy", "pairs.json", "table"]
    assert os.stat(lay.table).st_mode & 0o777 == os.stat(lay.data_dir).st_mode & 0o777
