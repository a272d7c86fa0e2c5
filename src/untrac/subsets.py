"""What a bank of subset retrains says beyond leave-one-out (DESIGN §2, "Beyond leave-one-out").

The bank measures v(S) = L(θ−S) − L(θ0) on one test subset for subsets S of the K training
datasets left out, each θ−S trained like θ0 on the datasets not in S (v(∅) = 0: θ−∅ is θ0).
Leave-dataset-out is v({Z}). Every function here takes ``values``: a mapping from a frozenset of
dataset names (the datasets removed) to v, and works in the shared sign (positive: the removed
datasets helped the model on the test subset).
"""

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

Values = Mapping[frozenset, float]


def every_subset(names: Sequence[str]) -> list[frozenset]:
    """All 2^K subsets of ``names``, by size then in the order of ``names`` (∅ first, all last)."""
    return [frozenset(c) for size in range(len(names) + 1) for c in itertools.combinations(names, size)]


def shapley(values: Values, names: Sequence[str]) -> dict[str, float]:
    """Exact Shapley value of each dataset in the removal game v (DESIGN §2):
    φ_Z = Σ_{S ∌ Z} |S|! (K − |S| − 1)! / K! · (v(S ∪ {Z}) − v(S)).

    Needs v of every subset (the bank with ``groundtruth.subsets=all``); efficiency holds exactly:
    Σ_Z φ_Z = v(all) − v(∅). Raises ``KeyError`` naming the first missing subset.
    """
    k = len(names)
    out = {}
    for z in names:
        others = [n for n in names if n != z]
        total = 0.0
        for s in every_subset(others):
            weight = math.factorial(len(s)) * math.factorial(k - len(s) - 1) / math.factorial(k)
            total += weight * (_v(values, s | {z}) - _v(values, s))
        out[z] = total
    return out


def additive_prediction(single: Mapping[str, float], removed: frozenset) -> float:
    """A method's prediction for removing S: Σ_{Z∈S} I(Z), its dataset influences added (DESIGN §2)."""
    return float(sum(single[z] for z in removed))


def additivity(values: Values, names: Sequence[str]) -> float:
    """R² of v(S) against Σ_{Z∈S} v({Z}) over the bank's subsets of two or more datasets: the
    share of the measured effects' variance that adding the single-dataset effects explains
    (1: leave-one-out tells everything; ≤ 0: the effects do not add up). NaN with fewer than two
    such subsets or no spread."""
    single = {z: _v(values, frozenset([z])) for z in names}
    groups = [s for s in values if len(s) >= 2]
    measured = np.array([values[s] for s in groups], float)
    if len(groups) < 2 or np.ptp(measured) == 0:
        return math.nan
    predicted = np.array([additive_prediction(single, s) for s in groups])
    residual = np.sum((measured - predicted) ** 2)
    return float(1 - residual / np.sum((measured - measured.mean()) ** 2))


def group_lds(values: Values, influence: Mapping[str, float]) -> float:
    """Group linear datamodeling score (DESIGN §2; TRAK's LDS at the level of datasets): Spearman,
    over the bank's non-empty subsets S, between the method's additive prediction Σ_{Z∈S} I(Z)
    and the measured v(S). NaN when undefined (under three subsets, a constant side, NaN input)."""
    subsets = [s for s in values if s]
    predicted = np.array([additive_prediction(influence, s) for s in subsets], float)
    measured = np.array([values[s] for s in subsets], float)
    if len(subsets) < 3 or not (np.isfinite(predicted).all() and np.isfinite(measured).all()):
        return math.nan
    if np.ptp(predicted) == 0 or np.ptp(measured) == 0:
        return math.nan
    return float(stats.spearmanr(predicted, measured).statistic)


def top_k_removal(values: Values, influence: Mapping[str, float], k: int) -> tuple[float, float]:
    """Top-k removal (DESIGN §2): v of the method's k highest-influence datasets removed together,
    and the mean v over every k-subset in the bank (what a random pick of k removes). A method whose
    own picks matter removes more than the mean."""
    top = frozenset(sorted(influence, key=lambda z: influence[z], reverse=True)[:k])
    same_size = [v for s, v in values.items() if len(s) == k]
    return _v(values, top), float(np.mean(same_size))


def _v(values: Values, subset: frozenset) -> float:
    if not subset:
        return values.get(subset, 0.0)  # v(∅) = 0 by definition
    if subset not in values:
        raise KeyError(f"the bank has no model without {'+'.join(sorted(subset))}")
    return values[subset]


def bank_values(subsets: pd.DataFrame) -> dict[tuple, dict[frozenset, float]]:
    """``subsets.csv`` (record.SUBSETS) → {(run, test subset): {S: v(S), mean over seeds}}."""
    out: dict[tuple, dict[frozenset, float]] = {}
    means = subsets.groupby(["run", "test_subset", "removed"], sort=False).influence.mean()
    for (run, subset, removed), v in means.items():
        key = frozenset(str(removed).split("+")) if isinstance(removed, str) and removed else frozenset()
        out.setdefault((run, subset), {})[key] = float(v)
    return out


def bank_tables(influence: pd.DataFrame, subsets: pd.DataFrame, names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """What the bank says, per (run, test subset): ``lds`` (record.LDS, each method), ``shapley``
    (record.SHAPLEY, only when every subset is in the bank), ``additivity`` (run, test_subset,
    additivity) and ``removal`` (method, run, test_subset, k, loss_change, mean_k: top-k removal for
    each k whose top-k subset the bank holds)."""
    final = influence[influence.is_final]
    lds, shap, add, removal = [], [], [], []
    for (run, subset), values in bank_values(subsets).items():
        add.append({"run": run, "test_subset": subset, "additivity": additivity(values, names)})
        if len(values) == 2 ** len(names):
            loo = {z: values[frozenset([z])] for z in names}
            shap += [{"run": run, "train_dataset": z, "test_subset": subset, "shapley": phi, "loo": loo[z]}
                     for z, phi in shapley(values, names).items()]
        rows = final[(final.run == run) & (final.test_subset == subset)]
        for method, group in rows.groupby("method", sort=False):
            estimate = dict(zip(group.train_dataset, group.influence))
            lds.append({"method": method, "run": run, "test_subset": subset, "lds": group_lds(values, estimate),
                        "n_subsets": sum(1 for s in values if s)})
            for k in range(1, len(names)):
                top = frozenset(sorted(estimate, key=estimate.get, reverse=True)[:k])
                if top in values:
                    picked, mean = top_k_removal(values, estimate, k)
                    removal.append({"method": method, "run": run, "test_subset": subset, "k": k,
                                    "loss_change": picked, "mean_k": mean})
    return {"lds": pd.DataFrame(lds, columns=["method", "run", "test_subset", "lds", "n_subsets"]),
            "shapley": pd.DataFrame(shap, columns=["run", "train_dataset", "test_subset", "shapley", "loo"]),
            "additivity": pd.DataFrame(add, columns=["run", "test_subset", "additivity"]),
            "removal": pd.DataFrame(removal, columns=["method", "run", "test_subset", "k", "loss_change", "mean_k"])}


def bank_floor(subsets: pd.DataFrame) -> float:
    """The bank's own noise floor, the ceiling of any method's LDS: Spearman over the non-empty
    subsets between v(S) of two disjoint halves of the ground-truth seeds (first ⌊S/2⌋ seeds against
    the next ⌊S/2⌋), averaged over (run, test subset). NaN with fewer than two seeds."""
    values = []
    for _, frame in subsets[subsets.removed.fillna("") != ""].groupby(["run", "test_subset"], sort=False):
        seeds = sorted(frame.seed.unique())
        half = len(seeds) // 2
        if half == 0:
            continue
        cells = frame.pivot_table(index="removed", columns="seed", values="influence")
        a, b = cells[seeds[:half]].mean(axis=1), cells[seeds[half:2 * half]].mean(axis=1)
        if len(a) >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
            values.append(stats.spearmanr(a, b).statistic)
    return float(np.mean(values)) if values else math.nan
