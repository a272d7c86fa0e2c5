"""untrac.paper.tables: the measured-beside-paper tables, against hand-computed values."""

import math
import re

import numpy as np
import pandas as pd
from scipy import stats

from untrac.paper import published, tables

SYNTH = ["dataset1", "dataset2", "dataset3", "dataset4"]


def no_ci(cell: str) -> str:
    """A measured cell without its bootstrap interval (checked on its own in test_table3_and_5…)."""
    return re.sub(r" \[-?\d\.\d{3}, -?\d\.\d{3}\]", "", cell)


def _influence(data: str, method: str, values_by_run: list[list[float]]) -> pd.DataFrame:
    rows = [{"data": data, "method": method, "run": r, "train_dataset": z, "test_subset": "test", "influence": v}
            for r, values in enumerate(values_by_run) for z, v in zip(SYNTH, values)]
    return pd.DataFrame(rows)


def test_table2_standardises_per_run_and_puts_paper_rows_beside():
    final = pd.concat([_influence("synthA", "untrac", [[4, 3, 2, 1], [40, 30, 20, 10]]),
                       _influence("synthB", "untrac", [[1, 2, 3, 4]])])
    truth = pd.concat([_influence(d, "x", [[4, 3, 2, 1]]).drop(columns="method") for d in ("synthA", "synthB")])
    display, measured, ref = tables.table2(final, truth)
    z = (np.array([4, 3, 2, 1]) - 2.5) / np.array([4, 3, 2, 1]).std()
    assert np.allclose(measured.loc["untrac", ["synthA 1", "synthA 2", "synthA 3", "synthA 4"]], z)
    assert np.allclose(measured.loc["untrac", ["synthB 1", "synthB 4"]], [z[3], z[0]])
    assert list(display.columns) == [f"synth{d} {i}" for d in "AB" for i in range(1, 5)]
    assert display.loc["UnTrac (paper)", "synthA 1"] == 1.443
    assert display.loc["Ground Truth (measured)", "synthA 1"] == round(z[0], 3)
    # Methods not measured still show the paper's row, with empty measured cells.
    assert math.isnan(display.loc["GradDot (measured)", "synthA 1"])
    assert display.loc["GradDot (paper)", "synthB 2"] == 1.730


def _corr(method: str, pearsons_by_run: list[list[float]], **settings) -> pd.DataFrame:
    rows = [{"method": method, "run": r, "test_subset": f"s{i}", "pearson": p, "spearman": p / 2, **settings}
            for r, values in enumerate(pearsons_by_run) for i, p in enumerate(values)]
    return pd.DataFrame(rows)


def test_table3_and_5_average_subsets_then_runs():
    corr = pd.concat([_corr("untrac", [[0.2, 0.4], [0.6, 0.8]], sizes="equal", testset="toxigen"),
                      _corr("untrac", [[0.5, 0.5], [0.5, 0.5]], sizes="different", testset="winobias")])
    display, measured, ref = tables.table3_5(corr, "pearson")
    # per run: 0.3 and 0.7 → mean 0.5, std (ddof=1) 0.283; the bootstrap interval resamples the 4 pairs
    low, high = stats.bootstrap(([0.2, 0.4, 0.6, 0.8],), np.mean, n_resamples=9999, method="percentile",
                                rng=np.random.default_rng(0)).confidence_interval
    assert display.loc["UnTrac (measured)", "Equal ToxiGen"] == f"0.500 ± 0.283 [{low:.3f}, {high:.3f}]"
    assert display.loc["UnTrac (paper)", "Equal ToxiGen"] == "0.419 ± 0.063"
    assert no_ci(display.loc["UnTrac (measured)", "Different WinoBias"]) == "0.500 ± 0.000"
    assert no_ci(display.loc["UnTrac (measured)", "Equal TruthfulQA"]) == "–"  # not run
    assert list(display.columns)[:3] == ["Equal ToxiGen", "Equal WinoBias", "Equal TruthfulQA"]
    # A NaN subset is left out of the mean and the cell says so.
    nan = _corr("untrac", [[0.2, float("nan")], [0.6, 0.8]], sizes="equal", testset="winobias")
    display, _, _ = tables.table3_5(pd.concat([corr, nan]), "pearson")
    assert no_ci(display.loc["UnTrac (measured)", "Equal WinoBias"]) == "0.450 ± 0.354 [3/4 scored]"  # runs 0.2, 0.7
    assert "scored" not in display.loc["UnTrac (measured)", "Equal ToxiGen"]
    spearman, _, _ = tables.table3_5(corr, "spearman")
    assert no_ci(spearman.loc["UnTrac (measured)", "Equal ToxiGen"]) == "0.250 ± 0.141"
    assert spearman.loc["UnTrac-Inv (paper)", "Equal WinoBias"] == "0.854 ± 0.010"


def test_table4_has_both_halves_and_adam_5e5_in_each():
    corr = pd.concat([_corr(m, [[v], [v + 0.1]], optim=o, lr=lr)
                      for m in ("untrac", "untrac_inv")
                      for o, lr, v in (("sgd", 5e-5, -0.1), ("adam", 5e-5, 0.4), ("adam", 5e-6, 0.0))])
    display, measured, ref = tables.table4(corr)
    assert list(display.columns) == [*published.OPTIMIZERS.values(), "lr 5e-06", "lr 1e-05", "lr 5e-05", "lr 1e-04",
                                     "lr 5e-04"]
    assert no_ci(display.loc["UnTrac (measured)", "Adam"]) == no_ci(display.loc["UnTrac (measured)", "lr 5e-05"]) == "0.450 ± 0.071"
    assert no_ci(display.loc["UnTrac (measured)", "SGD"]) == "-0.050 ± 0.071"
    assert display.loc["UnTrac (paper)", "SGD w/momentum"] == "-0.239 ± 0.011"
    assert display.loc["UnTrac-Inv (paper)", "lr 5e-06"] == "–"
    assert no_ci(display.loc["UnTrac (measured)", "RMSProp"]) == "–"


def test_a_method_the_paper_lacks_gets_a_row_under_its_registry_name():
    """Adding a method plugin needs no edit of the paper code: its rows follow the paper's, by name."""
    assert published.in_order({"newmethod", "untrac", "graddot", "ground_truth"}) == \
        ["graddot", "untrac", "ground_truth", "newmethod"]
    measured = pd.DataFrame({"dataset1": [1.0, 2.0]}, index=["untrac", "newmethod"])
    paper = pd.DataFrame({"dataset1": [0.5]}, index=["untrac"])
    table = tables._beside(measured, paper, lambda frame, method, column, value: value)
    assert list(table.index) == ["UnTrac (measured)", "UnTrac (paper)", "newmethod (measured)", "newmethod (paper)"]
    assert table.loc["newmethod (measured)", "dataset1"] == 2.0


def test_table3_cells_carry_the_median_exact_p_value_of_their_pairs():
    corr = _corr("untrac", [[0.2, 0.4], [0.6, 0.8]], sizes="equal", testset="toxigen")
    corr["pearson_p"] = [0.5, 0.1, 0.3, 0.9]  # median over the 4 (run, test subset) pairs: 0.4
    display, _, _ = tables.table3_5(corr, "pearson")
    assert display.loc["UnTrac (measured)", "Equal ToxiGen"].endswith(" p=0.4")
    assert " p=" not in display.loc["UnTrac (paper)", "Equal ToxiGen"]
    # Runs that predate the p column keep the cell as it was, rather than a made-up p.
    display, _, _ = tables.table3_5(corr.drop(columns="pearson_p"), "pearson")
    assert " p=" not in display.loc["UnTrac (measured)", "Equal ToxiGen"]
    # ... and so do old runs pooled with new ones: no median over part of the pairs.
    display, _, _ = tables.table3_5(corr.assign(pearson_p=[0.5, 0.1, float("nan"), float("nan")]), "pearson")
    assert " p=" not in display.loc["UnTrac (measured)", "Equal ToxiGen"]
