"""The report's statistics and the paper's analyses: Welch and paired t intervals against scipy, Fig. 6 / 8
sections with the paper's numbers, Fig. 7's profile against an explicit loop, and their figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from dycl.analysis_plots import rank_shift_profile_figure, sweep_figure
from dycl.experiment import PAPER_MINI, CampusSpec, RunConfig, Suite, SuiteResults
from dycl.experiment.figures import write_figures
from dycl.experiment.report import report_markdown
from dycl.experiment.stats import Stat, mean_interval, paired_interval, welch_interval
from dycl.experiment.suites import Sweep
from dycl.figures import rank_shift_profile, write_rank_shift_profiles
from dycl.plots import save_figure
from dycl.tasks import TASKS, RetrievalTask

# --------------------------------------------------------------------------- intervals


def test_welch_interval_is_scipys():
    a, b = (0.31, 0.35, 0.30), (0.20, 0.26, 0.21, 0.24)
    got = welch_interval(Stat(a), Stat(b))
    ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert got.method == "Welch t" and got.estimate == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12)
    assert (got.lo, got.hi) == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12))
    # By hand: Welch–Satterthwaite degrees of freedom and the t quantile.
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    assert got.hi - got.estimate == pytest.approx(sps.t.ppf(0.975, df) * math.sqrt(va + vb), rel=1e-12)
    assert welch_interval(Stat((0.3,)), Stat(b)) is None
    same = welch_interval(Stat((0.5, 0.5)), Stat((0.4, 0.4)))  # no spread at all: a point
    assert (same.lo, same.hi) == (pytest.approx(0.1), pytest.approx(0.1))


def test_paired_interval_is_scipys_and_cells_mark_exclusion_of_zero():
    after, before = np.array([0.52, 0.55, 0.49, 0.51]), np.array([0.50, 0.52, 0.49, 0.47])
    got = paired_interval(after - before)
    ref = sps.ttest_rel(after, before).confidence_interval(0.95)
    assert got.method == "paired t"
    assert (got.lo, got.hi) == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12))
    assert mean_interval([1.0]) is None and paired_interval([0.1, float("nan")]) is None
    # sd 1 point each, 3 seeds: Welch df 4, half width t(0.975, 4) · √(2/3) = 2.27 points.
    gap = welch_interval(Stat((0.50, 0.52, 0.51)), Stat((0.40, 0.41, 0.42)))
    assert gap.cell() == "**+10.0** [+7.7, +12.3]" and gap.excludes_zero
    assert paired_interval([0.01, -0.02, 0.015]).cell() == "+0.2 [-4.5, +4.9]"  # t(0.975, 2) = 4.30


# --------------------------------------------------------------------------- report sections


def _suite() -> Suite:
    configs = tuple(PAPER_MINI.config(k) for k in (
        "triplet", "triplet-scale1", "triplet-scale2", "sigmatriplet", "happier", "dycl", "dycl-happier",
        "dycl-happier-tau16", "dycl-happier-tau64"))
    return Suite(name="t", description="synthetic metrics", campus=CampusSpec(8, 6, 4, 32), training={},
                 configs=configs, seeds=(0, 1, 2),
                 groups={"methods": ("triplet", "sigmatriplet", "happier", "dycl", "dycl-happier"),
                         "scales": PAPER_MINI.groups["scales"]},
                 sweeps={"tau": PAPER_MINI.sweeps["tau"]}, rerankings=("none", "k-reciprocal"))


def _metrics(base: float, seed: int) -> dict:
    row = {"H-AP": base, "ASI": base, "NDCG": base, "mAP_0": base, "mAP_1": base + 0.01, "mAP_2": base + 0.02,
           "mAP_overall": base + 0.01 + 0.004 * seed, "R@1_0": base, "R@1_1": base, "R@1_2": base,
           "R@1_overall": base}
    return {task: dict(row) for task in TASKS}


def _results(tmp_path: Path) -> SuiteResults:
    suite = _suite()
    results = SuiteResults(suite=suite, output=tmp_path)
    for i, config in enumerate(suite.configs):
        for seed in suite.seeds:
            base = 0.2 + 0.03 * i + 0.01 * seed * (i % 2)
            results.metrics[(config.key, seed, "none")] = _metrics(base, seed)
            results.metrics[(config.key, seed, "k-reciprocal")] = _metrics(base + 0.002 * (seed + 1), seed)
    return results


def test_report_sections_intervals_and_the_papers_numbers(tmp_path):
    results = _results(tmp_path)
    text = report_markdown(results, {}, "cmd", None)
    assert "Welch's t interval" in text and "paired t interval" in text
    # Fig. 6: the paper's gains beside ours, Σ-Triplet minus each single-scale Triplet.
    multi = results.stat("sigmatriplet", TASKS[0], "mAP_overall")
    single = results.stat("triplet", TASKS[0], "mAP_overall")
    cell = welch_interval(multi, single).cell()
    assert f"| Triplet | {cell} | " in text and "| +12.28 |" in text and "| +4.43 |" in text
    # Fig. 8: the τ sweep, one row per value.
    assert "### Fig. 8 analogue: τ (DyCL scale)" in text
    assert "| 16 | DyCL+HAPPIER, τ = 16 |" in text and "| 32 | DyCL+HAPPIER |" in text
    # Paired: k-reciprocal − none on the same runs, the t interval of the per-run differences.
    diffs = [0.002 * (s + 1) for s in range(3)]
    assert f"| Triplet | mAP overall | {paired_interval(diffs).cell(digits=2)} |" in text
    # The complementarity comparison is HAPPIER's recipe against the full loss.
    assert "DyCL+HAPPIER − HAPPIER" in text
    assert results.suite.config("happier").loss == "happier:0.9,cluster:0.1"
    # Tables II/III carry the paper's columns (n/a: not sourced) and Table IV the paper's DyML numbers.
    assert "paper satellite->drone H-AP" in text and "| n/a |" in text
    assert "| DyML-Product | n/a | 41.21 | 46.54 | +5.33 |" in text and "| ours | n/a | n/a | n/a |" in text


def test_table_iv_rows_come_from_the_suites_table4_files(tmp_path):
    """Our Table IV row: mean ± sd over the seed files, and the paired interval of MSRerank − Rerank."""
    import json

    results = _results(tmp_path)
    rerank, ms = (0.40, 0.42, 0.41), (0.43, 0.44, 0.46)
    (tmp_path / "table4").mkdir()
    for seed, (a, b) in enumerate(zip(rerank, ms, strict=True)):
        rows = {"none": {"mAP_overall": 0.3}, "k-reciprocal": {"mAP_overall": a},
                "MSRerank (paper)": {"mAP_overall": b}}
        record = {"seed": seed, "source": "synthetic shapes, trained", "ks": [5, 9, 30], "rows": rows}
        (tmp_path / "table4" / f"seed{seed}.json").write_text(json.dumps(record))
    (tmp_path / "table4" / "seed9.json").write_text("{")  # torn: skipped, not a crash
    text = report_markdown(results, {}, "cmd", None)
    interval = paired_interval(np.subtract(ms, rerank)).cell(digits=2)
    row = (f"| ours: synthetic shapes, trained ResNet-18 (seeds 0, 1, 2) | 30.00 ± 0.00 | "
           f"{Stat(rerank).cell(digits=2)} | "
           f"{Stat(ms).cell(digits=2)} | {interval} (paired 95 % CI) |")
    assert row in text and "(5, 9, 30)" in text


def test_report_figures_of_the_sweep_and_fig6(tmp_path):
    results = _results(tmp_path)
    figures = write_figures(results, tmp_path / "img", None)
    assert figures["sweep_tau"] == ["img/results_sweep_tau.png"]
    assert (tmp_path / "img" / "results_sweep_tau.png").read_bytes()[:4] == b"\x89PNG"
    assert len(figures["scales"]) == 2 and "rank_profile" not in figures  # no data: no training set
    with pytest.raises(ValueError, match="nothing to draw"):
        sweep_figure({}, "τ", "mAP")


def test_paper_mini_plans_three_seeds_fig6_with_triplets_and_the_recipes():
    assert len(PAPER_MINI.seeds) >= 3
    assert PAPER_MINI.groups["scales"] == ("triplet", "triplet-scale1", "triplet-scale2", "sigmatriplet")
    for s in (1, 2):
        assert PAPER_MINI.config(f"triplet-scale{s}").loss_options == {"sigmatriplet": {"scales": [s]}}
    assert all(PAPER_MINI.config(k).label.startswith("extra") for k in PAPER_MINI.groups["scales_dycl"][:-1])
    assert PAPER_MINI.config("happier").loss == "happier:0.9,cluster:0.1"
    assert PAPER_MINI.config("dycl-happier").loss == "dycl:0.2,cluster:0.1,happier:0.9"
    for key in ("contrastive", "softmargintriplet", "instance", "csl", "sigmams", "multisimilarity"):
        assert key in PAPER_MINI.groups["methods"]
    assert isinstance(PAPER_MINI.sweeps["lambda"], Sweep)
    for sweep in PAPER_MINI.sweeps.values():
        assert all(PAPER_MINI.config(k) for k, _ in sweep.points)
    assert RunConfig("x", "x", "dycl").overrides() == {"loss": "dycl", "sampler": "random"}
    # The release's choices: its DyCL normalisation, and its schedule shrunk with the 5-epoch run.
    assert PAPER_MINI.config("dycl-happier-normbatch").loss_options == {"dycl": {"normalize": "batch"}}
    release = PAPER_MINI.config("dycl-happier-release").overrides()
    assert (release["schedule"], release["schedule_epochs"], release["warmup_epochs"]) == ("release", 75, 1)
    assert all(PAPER_MINI.config(k) for k in PAPER_MINI.groups["release"])
    assert PAPER_MINI.table4_seeds == PAPER_MINI.seeds


# --------------------------------------------------------------------------- Fig. 7 profile


def ref_profile(base, after):
    """Per initial rank r (1-based), mean over queries of new rank − r and |new rank − r|, by loops."""
    q, g = base.shape
    shift = np.zeros(g)
    absolute = np.zeros(g)
    for i in range(q):
        order = sorted(range(g), key=lambda j: (base[i, j], j))
        new_order = sorted(range(g), key=lambda j: (after[i, j], j))
        new_rank = {item: r + 1 for r, item in enumerate(new_order)}
        for r, item in enumerate(order):
            shift[r] += (new_rank[item] - (r + 1)) / q
            absolute[r] += abs(new_rank[item] - (r + 1)) / q
    return shift, absolute


def test_rank_shift_profile_matches_explicit_loops():
    rng = np.random.default_rng(0)
    base = rng.random((7, 9))
    after = base + 0.3 * rng.random((7, 9))
    after[0, 3] = after[0, 4]  # a tie: broken by gallery index
    profile = rank_shift_profile(base, after)
    shift, absolute = ref_profile(base, after)
    np.testing.assert_allclose(profile.mean_shift, shift, atol=1e-12)
    np.testing.assert_allclose(profile.mean_abs_shift, absolute, atol=1e-12)
    assert abs(profile.mean_shift.sum()) < 1e-9  # shifts of a permutation sum to 0 per query
    taus = [sps.kendalltau(b, a).statistic for b, a in zip(base, after, strict=True)]
    assert profile.tau == pytest.approx(float(np.mean(taus))) and profile.queries == 7
    identity = rank_shift_profile(base, base)
    assert identity.tau == pytest.approx(1.0) and not identity.mean_abs_shift.any()
    with pytest.raises(ValueError, match="reranked: expected shape"):
        rank_shift_profile(base, after[:, :-1])


def test_rank_shift_profiles_of_every_query_are_drawn(tmp_path):
    rng = np.random.default_rng(1)
    ids = np.repeat(np.arange(4), 3)
    levels = np.eye(4, dtype=np.uint8) * 2
    task = RetrievalTask("satellite->drone", rng.standard_normal((4, 6)).astype(np.float32),
                         rng.standard_normal((12, 6)).astype(np.float32), np.arange(4), ids, levels,
                         thresholds=(200.0,))
    files = write_rank_shift_profiles(tmp_path, {"satellite->drone": task}, ks=(2, 5), label="t")
    assert [f.name for f in files] == ["rank_profile_satellite_to_drone.png"]
    assert files[0].read_bytes()[:4] == b"\x89PNG"
    profile = rank_shift_profile(np.zeros((1, 3)), np.array([[2.0, 1.0, 0.0]]))
    assert profile.mean_shift.tolist() == [2.0, 0.0, -2.0]
    save_figure(rank_shift_profile_figure({20: profile}, title="x"), tmp_path / "p.png")
