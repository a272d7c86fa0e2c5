import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from untrac.metrics import (MAX_SPLITS, correlate, correlations, half_splits, spearman_brown, standardize,
                            standardized_influence, summarize, truth_agreement)
from untrac.paper import reference


def test_correlate_matches_hand_computed_values():
    # x = [1, 2, 3, 4], y = [1, 3, 2, 4]: cov = 4/3·(…) → r = 0.8; ranks differ by one swap → rho = 0.8.
    pearson, spearman = correlate(np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4]))
    assert pearson == pytest.approx(0.8)
    assert spearman == pytest.approx(0.8)
    # A monotone but non-linear relation: Spearman 1, Pearson below 1.
    pearson, spearman = correlate(np.array([1, 2, 3, 4]), np.array([1, 4, 9, 100]))
    assert spearman == pytest.approx(1.0)
    assert 0.7 < pearson < 0.9


def test_correlate_is_nan_for_nan_or_constant_input():
    assert all(math.isnan(v) for v in correlate(np.array([1, np.nan, 3]), np.array([1, 2, 3])))
    assert all(math.isnan(v) for v in correlate(np.array([1, 1, 1]), np.array([1, 2, 3])))


def _frames():
    truth = pd.DataFrame({"run": [0] * 4 + [1] * 4, "train_dataset": list("abcd") * 2,
                          "test_subset": "t", "influence": [4, 3, 2, 1, 4, 3, 1, 2]})
    influence = truth.assign(method="m", step=10, is_final=True)
    influence.loc[influence.run == 1, "influence"] = [1, 2, 3, 4]  # run 1 anti-correlated ranks
    early = influence.assign(step=0, is_final=False, influence=0.0)
    return pd.concat([influence, early]), truth


def test_correlations_use_final_rows_and_summarize_over_runs():
    influence, truth = _frames()
    corr = correlations(influence, truth)
    assert list(corr.run) == [0, 1]
    assert corr.pearson[0] == pytest.approx(1.0)
    # run 1: estimate [1,2,3,4] vs truth [4,3,1,2] → Pearson −0.8.
    assert corr.pearson[1] == pytest.approx(-0.8)
    summary = summarize(corr)
    assert summary.pearson_mean[0] == pytest.approx(0.1)
    assert summary.pearson_std[0] == pytest.approx(np.std([1.0, -0.8], ddof=1))


def test_standardize_and_noise_floor():
    z = standardize(pd.Series([1.0, 2.0, 3.0]))
    assert z.mean() == pytest.approx(0) and z.std(ddof=0) == pytest.approx(1)
    _, truth = _frames()
    floor = truth_agreement(truth)
    # truth runs: [4,3,2,1] vs [4,3,1,2] → Pearson 0.8, Spearman 0.8.
    assert floor["pearson"] == pytest.approx(0.8) and floor["spearman"] == pytest.approx(0.8)
    assert truth_agreement(truth[truth.run == 0]) == {}


def test_papers_table2_rows_are_z_scores_of_one_vector():
    """Every row of the published Table 2: mean 0 and population std 1 to its three decimals."""
    values = reference("table2")[["dataset1", "dataset2", "dataset3", "dataset4"]].to_numpy()
    assert len(values) == 16
    np.testing.assert_allclose(values.mean(axis=1), 0, atol=5e-4)
    np.testing.assert_allclose(values.std(axis=1, ddof=0), 1, atol=1e-3)


def test_standardized_influence_z_scores_the_run_average():
    _, truth = _frames()  # runs [4,3,2,1] and [4,3,1,2] → average [4, 3, 1.5, 1.5]
    # a second test subset whose run average is [2, 1, 0.5, 0.5]: the subset average is [3, 2, 1, 1]
    other = truth.assign(test_subset="u", influence=truth.influence - [2, 2, 1, 1, 2, 2, 1, 1])
    row = standardized_influence(pd.concat([truth, other]).assign(method="m"), ["method"]).loc["m"]
    mean = np.array([3.0, 2.0, 1.0, 1.0])  # over runs and subsets, by hand
    expected = (mean - 1.75) / np.sqrt(((mean - 1.75) ** 2).mean())
    np.testing.assert_allclose(row[["a", "b", "c", "d"]].to_numpy(), expected)
    assert row.mean() == pytest.approx(0) and row.std(ddof=0) == pytest.approx(1)
    # The per-run z-scores, averaged, would shrink the spread when runs disagree.
    one = standardized_influence(truth.assign(method="m"), ["method"]).loc["m"]
    assert one.std(ddof=0) == pytest.approx(1)
    per_run = truth.groupby("run").influence.transform(standardize).groupby(truth.train_dataset).mean()
    assert per_run.std(ddof=0) < 0.99


def test_standardized_influence_keeps_a_nan_run_visible():
    _, truth = _frames()
    truth.loc[0, "influence"] = np.nan
    row = standardized_influence(truth.assign(method="m"), ["method"]).loc["m"]
    assert row.isna().all()


def test_nan_correlations_are_kept_and_counted():
    influence, truth = _frames()
    influence.loc[(influence.run == 1) & influence.is_final, "influence"] = 7.0  # constant: no correlation
    corr = correlations(influence, truth)
    assert list(corr.finite) == [True, False] and len(corr) == 2  # the NaN row is kept
    summary = summarize(corr).set_index("method")
    assert (summary.at["m", "subsets_scored"], summary.at["m", "subsets_total"]) == (1, 2)
    assert summary.at["m", "pearson_mean"] == pytest.approx(1.0)  # the mean is over the scored subset only
def _per_seed(values: dict[int, list[float]], subsets=("s", "t"), runs=(0,)) -> pd.DataFrame:
    """Per-seed ground truths: ``values[seed]`` lists subset s's four datasets, then subset t's."""
    rows = [{"run": run, "seed": seed, "test_subset": subset, "train_dataset": d, "influence": v[4 * i + j]}
            for run in runs for seed, v in values.items()
            for i, subset in enumerate(subsets) for j, d in enumerate("abcd")]
    return pd.DataFrame(rows)


def test_half_splits_are_disjoint_balanced_and_each_counted_once():
    assert half_splits([0, 1, 2, 3]) == [((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))]
    assert [len(half_splits(list(range(s)))) for s in (2, 3, 5, 6)] == [1, 3, 15, 10]
    assert all(not set(a) & set(b) and len(a) == len(b) == 2 for a, b in half_splits(list(range(5))))
    assert len(half_splits(list(range(12)))) == MAX_SPLITS


def test_noise_floor_compares_disjoint_halves_of_seeds():
    rng = np.random.default_rng(0)
    values = {seed: list(rng.normal(size=8)) for seed in (10, 11, 12, 13)}
    per_seed = _per_seed(values)
    truth = per_seed.groupby(["run", "train_dataset", "test_subset"], as_index=False).influence.mean()
    floor = truth_agreement(truth, per_seed)
    # Direct: for each split of {10..13} into two pairs and each subset, correlate the pair means.
    pearsons, spearmans = [], []
    for a, b in [((10, 11), (12, 13)), ((10, 12), (11, 13)), ((10, 13), (11, 12))]:
        for sl in (slice(0, 4), slice(4, 8)):
            mean_a = np.mean([values[s][sl] for s in a], axis=0)
            mean_b = np.mean([values[s][sl] for s in b], axis=0)
            pearsons.append(np.corrcoef(mean_a, mean_b)[0, 1])
            spearmans.append(np.corrcoef(pd.Series(mean_a).rank(), pd.Series(mean_b).rank())[0, 1])
    assert floor["compares"] == "halves" and (floor["seeds"], floor["seeds_per_half"], floor["pairs"]) == (4, 2, 6)
    assert floor["pearson"] == pytest.approx(np.mean(pearsons))
    assert floor["spearman"] == pytest.approx(np.mean(spearmans))
    r = floor["pearson"]
    assert floor["pearson_all_seeds"] == pytest.approx(2 * r / (1 + r) if r > 0 else math.nan, nan_ok=True)
    # Shared ground truth (runs_vary=sample): every run holds the same seeds; run 0 alone is compared.
    shared = _per_seed(values, runs=(0, 1))
    assert truth_agreement(truth, shared, shared=True) == floor


def test_noise_floor_with_seeds_and_runs_also_compares_the_runs_seed_means():
    """Runs that retrain, 3 seeds each (disjoint): beside the halves, the correlation between the
    two runs' 3-seed means, per subset, averaged; none when the runs share one ground truth."""
    rng = np.random.default_rng(1)
    per_seed = pd.concat([_per_seed({run * 10 + k: list(rng.normal(size=8)) for k in range(3)}, runs=(run,))
                          for run in (0, 1)])
    truth = per_seed.groupby(["run", "train_dataset", "test_subset"], as_index=False).influence.mean()
    floor = truth_agreement(truth, per_seed)
    means = truth.pivot(index=["test_subset", "train_dataset"], columns="run", values="influence")
    pearsons = [np.corrcoef(means.loc[subset, 0], means.loc[subset, 1])[0, 1] for subset in ("s", "t")]
    spearmans = [np.corrcoef(means.loc[subset, 0].rank(), means.loc[subset, 1].rank())[0, 1] for subset in ("s", "t")]
    assert floor["compares"] == "halves" and floor["seeds"] == 3
    assert floor["between_runs"]["pairs"] == 2
    assert floor["between_runs"]["pearson"] == pytest.approx(np.mean(pearsons))
    assert floor["between_runs"]["spearman"] == pytest.approx(np.mean(spearmans))
    shared = _per_seed({k: list(rng.normal(size=8)) for k in range(3)}, runs=(0, 1))  # the same seeds in both runs
    shared_truth = shared.groupby(["run", "train_dataset", "test_subset"], as_index=False).influence.mean()
    assert "between_runs" not in truth_agreement(shared_truth, shared, shared=True)


def test_noise_floor_falls_back_to_runs_with_one_seed():
    _, truth = _frames()
    one_seed = truth.assign(seed=truth.run)
    assert truth_agreement(truth, one_seed)["compares"] == "runs"
    assert truth_agreement(truth, one_seed) == truth_agreement(truth)
    assert truth_agreement(truth, one_seed, shared=True) == {}


def test_spearman_brown():
    assert spearman_brown(0.5, 2) == pytest.approx(2 / 3)  # two halves agreeing at 0.5 → 0.667 for the whole
    assert spearman_brown(0.5, 3) == pytest.approx(0.75)
    assert math.isnan(spearman_brown(-0.2, 2))


def test_bootstrap_ci_is_scipys_percentile_interval_of_the_pooled_correlations():
    from untrac.metrics import CI_RESAMPLES, bootstrap_ci

    corr = pd.DataFrame({"method": "m", "run": [0, 0, 0, 1, 1, 1], "test_subset": list("abcabc"),
                         "pearson": [0.9, 0.1, 0.5, 0.7, np.nan, 0.3], "spearman": [1.0, 0.0, 0.5, 0.5, 0.2, 0.4]})
    direct = stats.bootstrap(([0.9, 0.1, 0.5, 0.7, 0.3],), np.mean, confidence_level=0.95, n_resamples=CI_RESAMPLES,
                             method="percentile", rng=np.random.default_rng(0)).confidence_interval
    summary = summarize(corr).iloc[0]
    assert (summary.pearson_ci_low, summary.pearson_ci_high) == pytest.approx((direct.low, direct.high))
    assert summary.pearson_ci_low < 0.5 < summary.pearson_ci_high  # brackets the mean of the five values
    assert np.isnan(bootstrap_ci([0.4])).all() and np.isnan(bootstrap_ci([0.4, 0.4])).all()  # nothing to resample


# -- exact small-sample statistics (DESIGN §2) ---------------------------------------------------
from untrac.metrics import ndcg, permutation_pvalues, top1_hit  # noqa: E402


@pytest.mark.parametrize("estimate,truth", [
    ([0.3, 1.2, -0.4, 2.0], [0.1, 0.9, 0.2, 1.5]),
    ([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5]),
    ([0.5, -1.0, 2.0, 0.1, 0.0], [3.0, -2.0, 1.0, 0.2, 0.4]),
])
def test_exact_pvalues_match_scipys_exhaustive_permutation_test(estimate, truth):
    estimate, truth = np.array(estimate, float), np.array(truth, float)
    pearson_p, spearman_p = permutation_pvalues(estimate, truth)
    for p, fn in ((pearson_p, lambda x: stats.pearsonr(x, truth).statistic),
                  (spearman_p, lambda x: stats.spearmanr(x, truth).statistic)):
        ref = stats.permutation_test((estimate,), fn, permutation_type="pairings", n_resamples=math.inf,
                                     alternative="two-sided", vectorized=False)
        assert p == pytest.approx(ref.pvalue, abs=1e-12)


def test_a_perfect_four_dataset_spearman_has_p_two_in_twenty_four():
    _, p = permutation_pvalues(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 20.0, 30.0, 40.0]))
    assert p == pytest.approx(2 / 24)
    assert all(math.isnan(v) for v in permutation_pvalues(np.arange(9.0), np.arange(9.0)))  # K > 8: none


def test_top1_and_ndcg():
    truth = np.array([5.0, -0.2, 0.5, 0.6])
    assert top1_hit(np.array([3.0, 0.0, 1.0, 2.0]), truth) == 1.0
    assert top1_hit(np.array([0.0, 3.0, 1.0, 2.0]), truth) == 0.0
    assert ndcg(truth, truth) == pytest.approx(1.0)
    # Hand-computed: grades (3, 0, 1, 2); the reversed order puts grades 0, 1, 2, 3 first.
    discount = 1 / np.log2(np.arange(2, 6))
    expected = np.array([0, 1, 2, 3]) @ discount / (np.array([3, 2, 1, 0]) @ discount)
    assert ndcg(-truth, truth) == pytest.approx(expected)
    assert math.isnan(ndcg(np.array([1.0, np.nan, 0, 0]), truth))
