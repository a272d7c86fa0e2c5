"""The paper's tables, measured beside published.

Every table builder takes long frames gathered from run directories (``untrac.paper.aggregate``)
and returns ``(display, measured, paper)``: the table with a "measured" and a "paper" row per
method, and the two numeric frames behind it (for the heatmap figure, ``figures.heatmaps``).
"""

import math

import numpy as np
import pandas as pd

from untrac.metrics import standardized_influence, summarize
from untrac.paper.published import LEARNING_RATES, OPTIMIZERS, SIZES, TESTSETS, in_order, label, reference
from untrac.report import mean_std


def _beside(measured: pd.DataFrame, paper: pd.DataFrame, cell) -> pd.DataFrame:
    """Rows "<Method> (measured)" and "<Method> (paper)" for every method, in the paper's order."""
    columns = list(dict.fromkeys([*paper.columns, *measured.columns]))
    rows = {}
    for method in in_order([*measured.index, *paper.index]):
        for source, frame in (("measured", measured), ("paper", paper)):
            values = frame.reindex(index=[method], columns=columns).iloc[0]
            rows[f"{label(method)} ({source})"] = [cell(frame, method, c, v) for c, v in values.items()]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = "method"
    return table


def table2(final: pd.DataFrame, truth: pd.DataFrame):
    """Table 2. ``final``: data, method, run, train_dataset, test_subset, influence (final values);
    ``truth``: data, run, train_dataset, test_subset, influence. The run-averaged influence,
    z-scored across the four training datasets (``metrics.standardized_influence``)."""
    both = pd.concat([final, truth.assign(method="ground_truth")], ignore_index=True)
    z = standardized_influence(both, ["data", "method"]).stack().rename("z").reset_index()
    ref = reference("table2").melt(id_vars=["data", "method"], var_name="train_dataset", value_name="z")

    def wide(long: pd.DataFrame) -> pd.DataFrame:
        long = long.assign(column=long.data + " " + long.train_dataset.str.replace("dataset", ""))
        return long.pivot_table(index="method", columns="column", values="z", sort=False)

    measured, paper = wide(z), wide(ref)
    measured, paper = (f[sorted(f.columns, key=lambda c: (c.split()[0], int(c.split()[1])))] for f in (measured, paper))
    return _beside(measured, paper, lambda f, m, c, v: round(v, 3) if pd.notna(v) else np.nan), measured, paper


def summary_long(corr: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """mean ± std over runs of ``metric`` (per run: average over test subsets) for each setting,
    with the (run, test subset) pairs that gave a finite correlation (``scored``) of ``total`` and
    the 95 % bootstrap interval of the mean over those pairs (``ci_low``, ``ci_high``), and ``p``: the
    median over those pairs of the exact permutation p-value (``{metric}_p`` of correlations.csv),
    NaN when any scored pair lacks one (runs that predate it, pooled with newer ones: a median over
    part of the pairs would pass for all). With K = 4 a single correlation cannot go below
    p = 2/24, which the median shows where a mean of correlations hides it."""
    rows = []
    for values, group in corr.groupby(keys, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        p_values = group.get(f"{metric}_p", pd.Series(math.nan, index=group.index)).astype(float)
        scored = p_values[np.isfinite(group[metric].to_numpy(float))]
        medians = scored.groupby(group.method, sort=False).agg(lambda p: p.median() if p.notna().all() else math.nan)
        for r in summarize(group).itertuples():
            rows.append({**dict(zip(keys, values)), "method": r.method, "mean": getattr(r, f"{metric}_mean"),
                         "std": getattr(r, f"{metric}_std"), "runs": r.runs, "scored": r.subsets_scored,
                         "total": r.subsets_total, "ci_low": getattr(r, f"{metric}_ci_low"),
                         "ci_high": getattr(r, f"{metric}_ci_high"), "p": medians.get(r.method, math.nan)})
    return pd.DataFrame(rows, columns=[*keys, "method", "mean", "std", "runs", "scored", "total", "ci_low",
                                       "ci_high", "p"])


def with_count(text: str, scored: int, total: int) -> str:
    """A measured cell, marked with how many (run, test subset) pairs it averages when some were NaN."""
    return text if scored == total else f"{text} [{scored}/{total} scored]"


def with_p(text: str, p: float) -> str:
    """A measured cell with its median exact permutation p-value, when the runs recorded one."""
    return f"{text} p={p:.3g}" if math.isfinite(p) else text


def scored_note(corr: pd.DataFrame) -> str:
    """One line for a table's notes: finite correlations per method, of all (run, test subset) pairs."""
    counts = summarize(corr)
    return "Finite correlations, (run, test subset) pairs scored / total: " + ", ".join(
        f"{label(r.method)} {r.subsets_scored}/{r.subsets_total}" for r in counts.itertuples())


def _mean_std_table(measured_long: pd.DataFrame, paper_long: pd.DataFrame, label):
    """Long (…, method, mean, std) frames → the beside table, with ``label(row)`` naming columns."""
    frames = []
    for long in (measured_long, paper_long):
        long = long.assign(column=[label(r) for r in long.itertuples()]).dropna(subset=["column"])
        frames.append((long.pivot_table(index="method", columns="column", values="mean", sort=False, dropna=False),
                       long.pivot_table(index="method", columns="column", values="std", sort=False, dropna=False)))
    (m_mean, m_std), (p_mean, p_std) = frames
    stds = {"measured": m_std, "paper": p_std}
    ran = {(r.method, label(r)) for r in measured_long.itertuples()}
    counts = {(r.method, label(r)): (r.scored, r.total) for r in measured_long.itertuples() if label(r)}
    cis = {(r.method, label(r)): (r.ci_low, r.ci_high) for r in measured_long.itertuples() if label(r)}
    p_values = {(r.method, label(r)): getattr(r, "p", math.nan) for r in measured_long.itertuples() if label(r)}

    def cell(frame, method, column, value):
        std = stds["measured" if frame is m_mean else "paper"]
        if frame is p_mean and pd.isna(value):
            return "–"  # not published (or not legible in our copy of the paper)
        if frame is m_mean and (method, column) not in ran:
            return "–"  # not run
        s = std.at[method, column] if method in std.index and column in std.columns else math.nan
        if frame is m_mean:
            cell_text = with_count(mean_std(value, s, *cis[method, column]), *counts[method, column])
            return with_p(cell_text, float(p_values[method, column]))
        return mean_std(value, s)

    return _beside(m_mean, p_mean, cell), m_mean, p_mean


def table3_5(corr: pd.DataFrame, metric: str):
    """Table 3 (``metric="pearson"``) or Table 5 (``"spearman"``). ``corr``: the correlations.csv
    rows of every job with columns ``sizes`` and ``testset`` added."""
    ref = reference("table3_5")
    ref = ref[ref.metric == metric]

    def label(r):
        return f"{SIZES.get(r.sizes, r.sizes)} {TESTSETS.get(r.testset, r.testset)}"

    return _mean_std_table(summary_long(corr, ["sizes", "testset"], metric), ref, label)


def table4(corr: pd.DataFrame):
    """Table 4: Pearson per optimizer at lr 5e-5 and per Adam learning rate. ``corr`` has ``optim``
    and ``lr`` columns added."""

    def label(r):  # Adam at 5e-5 belongs to both halves, as in the paper; this names the optimizer half
        return OPTIMIZERS.get(r.optim, r.optim) if math.isclose(r.lr, 5e-5) else None

    def lr_label(r):
        return f"lr {r.lr:.0e}" if r.optim == "adam" else None

    measured, ref = summary_long(corr, ["optim", "lr"], "pearson"), reference("table4")
    halves = [_mean_std_table(measured, ref, f) for f in (label, lr_label)]
    joined = [pd.concat([a, b], axis=1) for a, b in zip(*halves)]
    lr_cols = [f"lr {lr:.0e}" for lr in LEARNING_RATES]
    order = [*OPTIMIZERS.values(), *lr_cols]
    return tuple(frame[[c for c in order if c in frame.columns]] for frame in joined)
