"""The Noisy pairs table paged on the server (mdw.views.noisy.pairs_page over RunView.pair_order) and
the ROC / PR curves reduced for the browser, on run folders whose scores the test writes itself."""
import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from helpers import write_run_data_for
from mdw.evaluate.detection import CURVE_POINTS, detection_curves, reduce_curve
from mdw.runs.audit import record_decision
from mdw.runs.view import RunView
from mdw.train.experts_io import save_scores
from mdw.views.noisy import PairsPage, first_flagged_pair, pairs_page

SORTS = {"clean": "consensus", "track_A": "wA", "track_B": "wB", "pair": "pair_ids"}


def write_run(run_dir, n, seed=0, epochs=2, ties=False, truth=True) -> dict:
    """A run folder with the run's data (captions "caption <id>") and dtcl/scores.npz of n pairs
    (pair ids shuffled, the last epoch's scores returned as numpy arrays)."""
    rng = np.random.default_rng(seed)
    noisy = rng.random(n) < 0.3
    clean = np.clip(np.where(noisy, rng.normal(0.3, 0.15, n), rng.normal(0.7, 0.15, n)), 0, 1)
    if ties:   # few distinct values: the sort's tie order matters
        clean = np.round(clean * 4) / 4
    wa = np.clip(clean + rng.normal(0, 0.05, n), 0, 1).round(2 if ties else 6)
    wb = np.clip(clean + rng.normal(0, 0.05, n), 0, 1)
    flag = clean < 0.5
    pair_ids = rng.permutation(n).astype(np.int64)
    last = {"consensus": clean.astype(np.float32), "wA": wa.astype(np.float32), "wB": wb.astype(np.float32),
            "flag": flag}
    scores = {k: np.stack([rng.random(n).astype(v.dtype) if k != "flag" else ~v, v]) for k, v in last.items()}
    save_scores(str(run_dir), "dtcl", {k: a[-epochs:] for k, a in scores.items()}, pair_ids, noisy if truth else None)
    write_run_data_for(run_dir, [f"caption {i}" for i in range(n)])
    return {**{k: v.astype(np.float32) if k != "flag" else v for k, v in last.items()},
            "pair_ids": pair_ids, "is_noisy": noisy if truth else None}


def expected_order(s, flag="all", truth="all", lo=0.0, hi=1.0, sort="clean", descending=False) -> list:
    """Pair ids passing the filters, sorted by (key, pair id) in plain Python: the reference."""
    out = []
    for i in range(len(s["pair_ids"])):
        c = float(s["consensus"][i])
        if not lo <= c <= hi:
            continue
        if flag != "all" and bool(s["flag"][i]) != (flag == "flagged"):
            continue
        if truth != "all" and bool(s["is_noisy"][i]) != (truth == "noisy"):
            continue
        v = float(s[SORTS[sort]][i])
        out.append(((-v if descending else v), int(s["pair_ids"][i])))
    return [p for _, p in sorted(out)]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("paging") / "run"
    s = write_run(d, 537, ties=True)
    return RunView(str(d)), s


@pytest.mark.parametrize("sort", list(SORTS))
@pytest.mark.parametrize("descending", [False, True])
def test_pages_partition_the_filtered_sorted_rows(small, sort, descending):
    v, s = small
    for flag, truth, lo, hi in [("all", "all", 0, 1), ("flagged", "noisy", 0, 0.5), ("not flagged", "all", 0.6, 0.9)]:
        want = expected_order(s, flag, truth, lo, hi, sort, descending)
        got, first = [], pairs_page(v, flag, truth, lo, hi, sort, descending, page=1, page_size=50)
        assert first.total == len(want) and first.n_pages == max(1, -(-len(want) // 50))
        for p in range(1, first.n_pages + 1):
            page = pairs_page(v, flag, truth, lo, hi, sort, descending, page=p, page_size=50)
            assert page.page == p and page.start == (p - 1) * 50 and len(page.rows) <= 50
            got += [r["pair"] for r in page.rows]
        assert got == want and len(set(got)) == len(got)


def test_rows_carry_scores_captions_and_the_latest_audit_decision(small, tmp_path):
    v, s = small
    pid = expected_order(s, "flagged")[1]
    record_decision(v.run_dir, "pair", pid, "clean", "first")
    record_decision(v.run_dir, "pair", pid, "noisy", "second look")
    page = pairs_page(v, "flagged", page=1, page_size=25)
    row = page.rows[1]
    i = int(np.flatnonzero(s["pair_ids"] == pid)[0])
    assert row == {"pair": pid, "caption": f"caption {pid}", "clean": round(float(s["consensus"][i]), 4),
                   "track_A": round(float(s["wA"][i]), 4), "track_B": round(float(s["wB"][i]), 4),
                   "flagged": True, "noisy": bool(s["is_noisy"][i]), "audit": "noisy"}
    assert page.table()[1] == [pid, f"caption {pid}", row["clean"], row["track_A"], row["track_B"], True,
                               row["noisy"], "noisy"]
    assert first_flagged_pair(v) == page.rows[0]["pair"]


def test_past_the_end_is_the_last_page_and_the_summary_says_where(small):
    v, s = small
    n = len(s["pair_ids"])
    last = pairs_page(v, page=10 ** 9, page_size=100)
    assert (last.page, last.n_pages, last.total, len(last.rows)) == (6, 6, n, n - 500)
    assert last.summary == f"rows 501–{n} of {n} training pairs, lowest clean score first"
    assert pairs_page(v, page=-3, page_size=100).page == 1
    flagged = pairs_page(v, "flagged", "noisy", 0, 0.5, "track_A", True, page=2, page_size=25)
    t = flagged.total
    assert flagged.summary == (f"rows 26–50 of {t:,} flagged truly noisy training pairs with a clean score in "
                               "[0.00, 0.50], highest track A score first")
    none = pairs_page(v, "flagged", "all", 0.9, 1.0)
    assert (none.total, none.rows, none.page, none.n_pages) == (0, [], 1, 1) and none.summary.startswith("no flagged")
    for bad in [dict(sort="loss"), dict(flag="maybe"), dict(page_size=0), dict(page_size=10 ** 6)]:
        with pytest.raises(ValueError):
            pairs_page(v, **bad)


def test_the_sort_is_cached_per_filter_and_pair_rows_is_the_same_list(small):
    v, s = small
    a = v.pair_order("flagged", sort="track_B", descending=True)
    assert v.pair_order("flagged", sort="track_B", descending=True) is a and not a.flags.writeable
    assert [r["pair"] for r in v.pair_rows("flagged", limit=30, start=10)] == expected_order(s, "flagged")[10:40]
    assert [r["pair"] for r in v.pair_rows()] == expected_order(s)


def test_a_run_without_ground_truth_ignores_the_truth_filter(tmp_path):
    s = write_run(tmp_path / "run", 60, truth=False, epochs=1)
    page = pairs_page(RunView(str(tmp_path / "run")), "all", "noisy", page_size=25)
    assert page.total == 60 and "truly" not in page.summary and page.rows[0]["noisy"] is None
    assert [r["pair"] for r in page.rows] == expected_order(s)[:25]
    assert RunView(str(tmp_path / "run")).detection() is None


def test_a_run_before_the_experts_stage_has_one_empty_page(tmp_path):
    page = pairs_page(RunView(str(tmp_path)))
    assert isinstance(page, PairsPage) and (page.total, page.rows, page.n_pages) == (0, [], 1)


def test_200k_pairs_page_from_the_scores_file(tmp_path):
    n = 200_000
    s = write_run(tmp_path / "run", n, seed=3, epochs=1)
    v = RunView(str(tmp_path / "run"))
    page = pairs_page(v, "flagged", page=7, page_size=50)
    assert len(page.rows) == 50 and page.total == int(s["flag"].sum())
    deep = pairs_page(v, "all", sort="track_A", descending=True, page=2000, page_size=100)
    assert len(deep.rows) == 100 and deep.total == n and deep.start == 199_900
    tail = s["wA"][np.argsort(-s["wA"].astype(np.float64), kind="stable")][199_900:]
    assert [r["track_A"] for r in deep.rows] == [round(float(x), 4) for x in tail]


def _max_gap(x_full, y_full, x_red, y_red) -> float:
    """Largest distance of a point of the full curve from the reduced one drawn as straight lines."""
    a = np.stack([x_red[:-1], y_red[:-1]], 1)
    d = np.stack([x_red[1:], y_red[1:]], 1) - a
    worst = 0.0
    for p in np.array_split(np.stack([x_full, y_full], 1), 64):
        t = np.clip(np.einsum("pik,ik->pi", p[:, None] - a, d) / np.maximum((d * d).sum(1), 1e-300), 0, 1)
        near = np.linalg.norm(p[:, None] - (a + t[..., None] * d), axis=2).min(1)
        worst = max(worst, float(near.max()))
    return worst


def test_curves_are_reduced_with_exact_ends_and_the_auc_of_all_pairs(tmp_path):
    s = write_run(tmp_path / "run", 200_000, seed=5, epochs=1)
    clean, y = s["consensus"].astype(np.float64), s["is_noisy"]
    c = detection_curves(clean, y)
    fpr, tpr, _ = roc_curve(y, -clean)
    prec, rec, _ = precision_recall_curve(y, -clean)
    assert len(fpr) > 10 * CURVE_POINTS and len(prec) > 10 * CURVE_POINTS   # there is something to reduce
    assert len(c["fpr"]) <= CURVE_POINTS and len(c["precision"]) <= CURVE_POINTS
    assert (c["fpr"][0], c["tpr"][0], c["fpr"][-1], c["tpr"][-1]) == (fpr[0], tpr[0], fpr[-1], tpr[-1])
    assert (c["recall"][0], c["precision"][0], c["recall"][-1], c["precision"][-1]) == (
        rec[0], prec[0], rec[-1], prec[-1])
    assert c["auc"] == pytest.approx(roc_auc_score(y, -clean), abs=1e-12)
    assert _max_gap(fpr, tpr, np.array(c["fpr"]), np.array(c["tpr"])) < 0.002
    assert _max_gap(rec, prec, np.array(c["recall"]), np.array(c["precision"])) < 0.005
    v = RunView(str(tmp_path / "run"))
    det = v.detection(0.5)
    assert det["metrics"]["auc"] == c["auc"] and det["metrics"]["flagged"] == int((clean < 0.5).sum())


def test_reduce_curve_keeps_short_curves_and_both_ends():
    x = np.linspace(0, 1, 500)
    assert np.array_equal(reduce_curve(x, x ** 2, 1000), np.arange(500))
    keep = reduce_curve(np.linspace(0, 1, 10_001), np.sqrt(np.linspace(0, 1, 10_001)), 100)
    assert len(keep) <= 100 and keep[0] == 0 and keep[-1] == 10_000 and np.all(np.diff(keep) > 0)
