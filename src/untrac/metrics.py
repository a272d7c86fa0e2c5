"""Agreement with the ground truth: correlations per test subset, aggregated over subsets and runs."""

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from untrac.record import CORRELATIONS


def correlate(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman across training datasets; NaN when undefined (NaN input, constant vector)."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    if len(estimate) < 2 or not (np.all(np.isfinite(estimate)) and np.all(np.isfinite(truth))):
        return math.nan, math.nan
    if np.ptp(estimate) == 0 or np.ptp(truth) == 0:
        return math.nan, math.nan
    return float(stats.pearsonr(estimate, truth).statistic), float(stats.spearmanr(estimate, truth).statistic)


EXACT_MAX_K = 8  # 8! = 40,320 orderings: exact in milliseconds; beyond, no p-value is printed


def permutation_pvalues(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Exact two-sided permutation p-values of Pearson and Spearman (DESIGN §2, "Exact p-values"):
    every one of the K! orderings of ``estimate`` against ``truth``, p = 2·min(P(r ≥ r_obs),
    P(r ≤ r_obs)) capped at 1 (scipy.stats.permutation_test's two-sided rule). With K = 4 the
    smallest possible Spearman p is 2/24 ≈ 0.083: no single K = 4 correlation is significant.
    NaN where the correlation is undefined or K > EXACT_MAX_K."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    observed = correlate(estimate, truth)
    if len(estimate) > EXACT_MAX_K or not all(np.isfinite(observed)):
        return math.nan, math.nan
    orders = np.array(list(itertools.permutations(range(len(estimate)))))
    out = []
    for x, y, r in ((estimate, truth, observed[0]),
                    (stats.rankdata(estimate), stats.rankdata(truth), observed[1])):
        xs = (x - x.mean()) / np.linalg.norm(x - x.mean())
        ys = (y - y.mean()) / np.linalg.norm(y - y.mean())
        null = xs[orders] @ ys  # the correlation of every ordering at once
        tol = 1e-12 * max(1.0, abs(r))  # ties of the observed value count, as scipy's do
        p = 2 * min(np.mean(null >= r - tol), np.mean(null <= r + tol))
        out.append(float(min(p, 1.0)))
    return out[0], out[1]


def top1_hit(estimate: np.ndarray, truth: np.ndarray) -> float:
    """1 when the method's most influential dataset is the ground truth's, else 0 (NaN input: NaN)."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    if not (np.isfinite(estimate).all() and np.isfinite(truth).all()):
        return math.nan
    return float(truth[np.argmax(estimate)] == truth.max())


def ndcg(estimate: np.ndarray, truth: np.ndarray) -> float:
    """NDCG of the method's ranking of the datasets, the gain of a dataset being its grade in the
    ground-truth order (K − 1 for the truth's first, … 0 for its last; ties share the mean grade),
    so a negative influence is no negative gain; discount 1/log2(1 + position). 1 = the truth's order."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    if not (np.isfinite(estimate).all() and np.isfinite(truth).all()) or len(truth) < 2:
        return math.nan
    gain = stats.rankdata(truth) - 1  # the truth's lowest gets 0
    discount = 1 / np.log2(np.arange(2, len(truth) + 2))
    ideal = np.sort(gain)[::-1] @ discount
    return float(gain[np.argsort(-estimate, kind="stable")] @ discount / ideal) if ideal > 0 else math.nan


def correlations(influence: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, run, test subset) from the final influence values; ``finite`` says
    whether that subset was scored (a NaN correlation is kept as a row, never dropped)."""
    final = influence[influence.is_final]
    merged = final.merge(truth, on=["run", "train_dataset", "test_subset"], suffixes=("", "_truth"))
    rows = []
    for (method, run, subset), group in merged.groupby(["method", "run", "test_subset"], sort=False):
        estimate, truth_values = group.influence.to_numpy(), group.influence_truth.to_numpy()
        pearson, spearman = correlate(estimate, truth_values)
        pearson_p, spearman_p = permutation_pvalues(estimate, truth_values)
        rows.append({"method": method, "run": run, "test_subset": subset, "pearson": pearson,
                     "spearman": spearman, "n_train_datasets": len(group),
                     "finite": bool(np.isfinite(pearson) and np.isfinite(spearman)),
                     "pearson_p": pearson_p, "spearman_p": spearman_p, "top1": top1_hit(estimate, truth_values),
                     "ndcg": ndcg(estimate, truth_values)})
    return pd.DataFrame(rows, columns=list(CORRELATIONS.columns))


CI_RESAMPLES = 9999


def bootstrap_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (``scipy.stats.bootstrap``, fixed seed) for the mean of the
    finite ``values`` — one correlation per (run, test subset). NaN with fewer than two values or
    no spread (nothing to resample). Percentile rather than BCa: BCa needs a jackknife that is
    unstable with the handful of subsets × runs of a typical table."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) < 2 or np.ptp(values) == 0:
        return math.nan, math.nan
    res = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=CI_RESAMPLES,
                          method="percentile", rng=np.random.default_rng(0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(corr: pd.DataFrame) -> pd.DataFrame:
    """Table 3 / 5 aggregation: average over test subsets within a run, then mean ± std over runs.

    A NaN correlation (constant or non-finite influence) cannot enter a mean, so each method also
    reports ``subsets_scored`` of ``subsets_total`` (run, test subset) pairs: the mean is over those.
    ``{pearson,spearman}_ci_{low,high}``: 95 % bootstrap interval of the mean over the (run, test
    subset) pairs (``bootstrap_ci``), so a difference between methods inside the noise shows.
    """
    per_run = corr.groupby(["method", "run"], sort=False)[["pearson", "spearman"]].mean()
    agg = per_run.groupby("method", sort=False).agg(["mean", "std"])
    agg.columns = [f"{metric}_{stat}" for metric, stat in agg.columns]
    agg["runs"] = per_run.groupby("method", sort=False).size()
    finite = pd.Series(np.isfinite(corr.pearson.to_numpy(float)) & np.isfinite(corr.spearman.to_numpy(float)),
                       index=corr.index)
    counts = finite.groupby(corr.method, sort=False).agg(["sum", "size"])
    agg["subsets_scored"] = counts["sum"].astype(int)
    agg["subsets_total"] = counts["size"].astype(int)
    for metric in ("pearson", "spearman"):
        ci = corr.groupby("method", sort=False)[metric].apply(bootstrap_ci)
        agg[f"{metric}_ci_low"] = ci.map(lambda c: c[0])
        agg[f"{metric}_ci_high"] = ci.map(lambda c: c[1])
    return agg.reset_index()


def standardize(values: pd.Series) -> pd.Series:
    """z-score across training datasets (Table 2: 'standardized for each method'), population std.

    All NaN when one value is NaN: z-scores of the rest would look complete but be on another scale.
    """
    std = values.std(ddof=0)
    return (values - values.mean()) / std if std > 0 and values.notna().all() else values * math.nan


def standardized_influence(frame: pd.DataFrame, group_cols: list[str]) -> pd.DataFrame:
    """Table 2: average each training dataset's influence over runs and test subsets, then z-score
    that average across the training datasets (population std).

    This is the paper's order: every row of its Table 2 has mean 0 and population std 1.000, which
    an average of per-run z-scores would not have (its std is below 1 when runs disagree). A NaN
    influence (non-finite unlearning) makes its row NaN rather than being silently averaged away.
    """
    keys = group_cols + ["train_dataset"]
    mean = frame.groupby(keys, sort=False).influence.agg(lambda v: v.mean(skipna=False))
    z = mean.groupby(level=group_cols, sort=False).transform(standardize)
    return z.unstack("train_dataset")


def _runs_agreement(truth: pd.DataFrame) -> dict:
    """Mean pairwise correlation between runs' ground-truth vectors (one training seed per run)."""
    runs = sorted(truth.run.unique())
    pearsons, spearmans = [], []
    for a, b in itertools.combinations(runs, 2):
        for subset, group in truth.groupby("test_subset"):
            pivot = group.pivot(index="train_dataset", columns="run", values="influence")
            p, s = correlate(pivot[a].to_numpy(), pivot[b].to_numpy())
            pearsons.append(p)
            spearmans.append(s)
    if not pearsons:
        return {}
    return {"compares": "runs", "pearson": float(np.nanmean(pearsons)), "spearman": float(np.nanmean(spearmans)),
            "pairs": len(pearsons)}


MAX_SPLITS = 100  # S = 8 has 35 balanced splits; beyond ~10 seeds the first 100 are plenty


def half_splits(seeds: list, limit: int = MAX_SPLITS) -> list[tuple[tuple, tuple]]:
    """Unordered pairs of disjoint groups of ⌊S/2⌋ seeds (one seed left out when S is odd)."""
    half = len(seeds) // 2
    splits = []
    for a in itertools.combinations(seeds, half):
        rest = [s for s in seeds if s not in a]
        for b in itertools.combinations(rest, half):
            if a < b:  # each unordered pair once
                splits.append((a, b))
                if len(splits) == limit:
                    return splits
    return splits


def spearman_brown(r: float, factor: float) -> float:
    """Reliability of a mean over ``factor`` times as many seeds, from the reliability r of one group."""
    return factor * r / (1 + (factor - 1) * r) if r > 0 else math.nan


def _halves_agreement(per_seed: pd.DataFrame) -> dict:
    """Correlation between the mean ground truths of two disjoint halves of each run's seeds."""
    pearsons, spearmans, n_seeds = [], [], set()
    for run, frame in per_seed.groupby("run"):
        cells = frame.pivot(index=["test_subset", "train_dataset"], columns="seed", values="influence")
        n_seeds.add(cells.shape[1])
        for a, b in half_splits(list(cells.columns)):
            halves = pd.DataFrame({"a": cells[list(a)].mean(axis=1), "b": cells[list(b)].mean(axis=1)})
            for subset, group in halves.groupby(level="test_subset"):
                p, s = correlate(group.a.to_numpy(), group.b.to_numpy())
                pearsons.append(p)
                spearmans.append(s)
    seeds = min(n_seeds)
    pearson = float(np.nanmean(pearsons))
    return {"compares": "halves", "pearson": pearson, "spearman": float(np.nanmean(spearmans)),
            "pairs": len(pearsons), "seeds": seeds, "seeds_per_half": seeds // 2,
            "pearson_all_seeds": spearman_brown(pearson, seeds / (seeds // 2))}


def truth_agreement(truth: pd.DataFrame, per_seed: pd.DataFrame | None = None, shared: bool = False) -> dict:
    """The noise floor: how well the ground truth agrees with an independent re-measurement of itself.

    With S ≥ 2 seeds per run (``per_seed``: one Eq. 1 row per seed): Pearson / Spearman between the
    means of two disjoint halves of a run's seeds (⌊S/2⌋ vs ⌊S/2⌋), per test subset, averaged over
    subsets, runs and the balanced splits; ``pearson_all_seeds`` is the Spearman–Brown prediction
    for two independent S-seed means (the reported ground truth is more reliable than either half).
    With one seed: the mean pairwise correlation between runs, which retrain it (``shared`` = runs
    share one ground truth, so there is nothing to compare). With S seeds and runs that retrain, also
    ``between_runs``: that correlation between the runs' S-seed means, two independent measurements of
    the ground truth as each run reports it (the halves hold only ⌊S/2⌋ seeds). If two measurements of
    the same ground truth agree only to r, no method can be expected to correlate with one of them much
    beyond r.
    """
    if per_seed is not None and len(per_seed) and per_seed.groupby("run").seed.nunique().min() >= 2:
        if shared:
            return _halves_agreement(per_seed[per_seed.run == per_seed.run.min()])
        between_runs = _runs_agreement(truth)
        return {**_halves_agreement(per_seed), **({"between_runs": between_runs} if between_runs else {})}
    return {} if shared else _runs_agreement(truth)
