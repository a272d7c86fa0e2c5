"""The paper's published numbers beside ours: reference data, the tables and the figures.

The reference values are transcribed from Isonuma & Titov (ACL 2024) into package data:
``reference/table2.csv`` (Table 2, standardised influence), ``reference/table3_5.csv`` (Table 3 =
Pearson, Table 5 = Spearman, mean and std over four runs) and ``reference/table4.csv`` (Table 4,
Pearson). Table 4's UnTrac-Inv at lr 5e-6 is not legible in the text we have and is left empty.

Every table builder takes long frames gathered from run directories (``scripts/aggregate.py``)
and returns ``(display, measured, paper)``: the table with a "measured" and a "paper" row per
method, and the two numeric frames behind it (for the heatmap figure).
"""

import math
from importlib import resources

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from untrac.metrics import correlate, standardized_influence, summarize  # noqa: E402
from untrac.report import mean_std  # noqa: E402

METHODS = {"graddot": "GradDot", "gradcos": "GradCos", "hif_arnoldi": "HIF (Arnoldi)", "hif_lissa": "HIF (LISSA)",
           "tracin": "TracIn", "untrac": "UnTrac", "untrac_inv": "UnTrac-Inv",
           "ekfac": "EK-FAC",  # not in the paper: its "paper" row stays blank
           "ground_truth": "Ground Truth"}
TESTSETS = {"toxigen": "ToxiGen", "winobias": "WinoBias", "truthfulqa": "TruthfulQA"}
SIZES = {"equal": "Equal", "different": "Different"}
OPTIMIZERS = {"sgd": "SGD", "sgd_momentum": "SGD w/momentum", "rmsprop": "RMSProp", "adam": "Adam",
              "adafactor": "Adafactor"}
LEARNING_RATES = (5e-6, 1e-5, 5e-5, 1e-4, 5e-4)
SYNTHETIC = {"dataset1": "1 (Task P/Fmt P)", "dataset2": "2 (Task P/Fmt Q)", "dataset3": "3 (Task Q/Fmt P)",
             "dataset4": "4 (Task Q/Fmt Q)"}


def reference(name: str) -> pd.DataFrame:
    """One reference table: ``table2``, ``table3_5`` or ``table4``."""
    with (resources.files("untrac") / "reference" / f"{name}.csv").open() as handle:
        return pd.read_csv(handle)


# -- tables ------------------------------------------------------------------------------------
def _beside(measured: pd.DataFrame, paper: pd.DataFrame, cell) -> pd.DataFrame:
    """Rows "<Method> (measured)" and "<Method> (paper)" for every method, in the paper's order."""
    columns = list(dict.fromkeys([*paper.columns, *measured.columns]))
    rows = {}
    for method in [m for m in METHODS if m in measured.index or m in paper.index]:
        for source, frame in (("measured", measured), ("paper", paper)):
            values = frame.reindex(index=[method], columns=columns).iloc[0]
            rows[f"{METHODS[method]} ({source})"] = [cell(frame, method, c, v) for c, v in values.items()]
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
    the 95 % bootstrap interval of the mean over those pairs (``ci_low``, ``ci_high``)."""
    rows = []
    for values, group in corr.groupby(keys, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        for r in summarize(group).itertuples():
            rows.append({**dict(zip(keys, values)), "method": r.method, "mean": getattr(r, f"{metric}_mean"),
                         "std": getattr(r, f"{metric}_std"), "runs": r.runs, "scored": r.subsets_scored,
                         "total": r.subsets_total, "ci_low": getattr(r, f"{metric}_ci_low"),
                         "ci_high": getattr(r, f"{metric}_ci_high")})
    return pd.DataFrame(rows, columns=[*keys, "method", "mean", "std", "runs", "scored", "total", "ci_low", "ci_high"])


def with_count(text: str, scored: int, total: int) -> str:
    """A measured cell, marked with how many (run, test subset) pairs it averages when some were NaN."""
    return text if scored == total else f"{text} [{scored}/{total} scored]"


def scored_note(corr: pd.DataFrame) -> str:
    """One line for a table's notes: finite correlations per method, of all (run, test subset) pairs."""
    counts = summarize(corr)
    return "Finite correlations, (run, test subset) pairs scored / total: " + ", ".join(
        f"{METHODS.get(r.method, r.method)} {r.subsets_scored}/{r.subsets_total}" for r in counts.itertuples())


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

    def cell(frame, method, column, value):
        std = stds["measured" if frame is m_mean else "paper"]
        if frame is p_mean and pd.isna(value):
            return "–"  # not published (or not legible in our copy of the paper)
        if frame is m_mean and (method, column) not in ran:
            return "–"  # not run
        s = std.at[method, column] if method in std.index and column in std.columns else math.nan
        if frame is m_mean:
            return with_count(mean_std(value, s, *cis[method, column]), *counts[method, column])
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


# -- figures -----------------------------------------------------------------------------------
def ci95(values) -> float:
    """Half-width of the 95% t-interval of the mean; NaN for fewer than two values."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan
    return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def over_runs(frame: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Average ``value`` within each run (over test subsets etc.), then mean and 95% CI over runs."""
    per_run = frame.groupby([*keys, "run"], sort=False)[value].mean().reset_index()
    out = per_run.groupby(keys, sort=False)[value].agg(mean="mean", ci95=ci95, runs="count")
    return out.reset_index()


def _band(ax, series: pd.DataFrame, x: str, label: str) -> None:
    series = series.sort_values(x)
    line, = ax.plot(series[x], series["mean"], marker=".", label=label)
    ax.fill_between(series[x], series["mean"] - series.ci95.fillna(0), series["mean"] + series.ci95.fillna(0),
                    color=line.get_color(), alpha=0.2)


def _save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure2(trajectory: pd.DataFrame, path) -> pd.DataFrame:
    """Figure 2: influence per training dataset over unlearning steps (rows: UnTrac, UnTrac-Inv;
    columns: synthA, synthB). ``trajectory``: data, method, run, train_dataset, test_subset, step, influence."""
    series = over_runs(trajectory, ["data", "method", "train_dataset", "step"], "influence")
    methods = [m for m in ("untrac", "untrac_inv") if m in set(series.method)]
    datas = sorted(series.data.unique())
    fig, axes = plt.subplots(len(methods), len(datas), figsize=(5 * len(datas), 3.4 * len(methods)), squeeze=False)
    for i, method in enumerate(methods):
        for j, data in enumerate(datas):
            ax = axes[i][j]
            part = series[(series.method == method) & (series.data == data)]
            for name, group in part.groupby("train_dataset"):
                _band(ax, group, "step", SYNTHETIC.get(name, name))
            ax.set(title=f"{METHODS[method]}, {data}", xlabel="unlearning step", ylabel="influence (Δ test loss)")
            ax.legend(fontsize=7)
    _save(fig, path)
    return series


def pearson_by_step(influence: pd.DataFrame, truth: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Correlation with the ground truth at every evaluated step (Figure 3): one row per
    (keys, run, test_subset, step) with ``pearson`` and ``spearman`` across training datasets."""
    shared = [k for k in keys if k in truth.columns]  # e.g. data; keys only in ``influence`` (method) just group
    truth = truth[[*shared, "run", "train_dataset", "test_subset", "influence"]]
    merged = influence.merge(truth, on=[*shared, "run", "train_dataset", "test_subset"], suffixes=("", "_truth"))
    rows = []
    for values, group in merged.groupby([*keys, "run", "test_subset", "step"], sort=False):
        pearson, spearman = correlate(group.influence.to_numpy(), group.influence_truth.to_numpy())
        rows.append({**dict(zip([*keys, "run", "test_subset", "step"], values)), "pearson": pearson,
                     "spearman": spearman})
    return pd.DataFrame(rows)


def figure3(curves: pd.DataFrame, path) -> pd.DataFrame:
    """Figure 3: Pearson over unlearning epochs at batch 1 and 256 (panels: UnTrac, UnTrac-Inv).
    ``curves``: method, batch_size, run, test_subset, epoch, pearson."""
    series = over_runs(curves, ["method", "batch_size", "epoch"], "pearson")
    series = series[series.runs > 0]  # step 0: no change yet, the correlation is undefined
    methods = [m for m in ("untrac", "untrac_inv") if m in set(series.method)]
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.4), squeeze=False)
    for ax, method in zip(axes[0], methods):
        for batch, group in series[series.method == method].groupby("batch_size"):
            _band(ax, group, "epoch", f"batch size {batch}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(title=METHODS[method], xlabel="unlearning epoch", ylabel="Pearson with ground truth", ylim=(-1.05, 1.05))
        ax.legend(fontsize=8)
    _save(fig, path)
    return series


def figure4(truth: pd.DataFrame, path, sizes: dict[str, int] | None = None) -> pd.DataFrame:
    """Figure 4: ground-truth influence per corpus, all_examples (left) vs fixed_steps (right).
    ``truth``: mode, run, train_dataset, test_subset, influence; ``sizes``: blocks per corpus."""
    per_corpus = truth.groupby(["mode", "train_dataset"], sort=False).influence.agg(mean="mean", ci95=ci95)
    per_corpus = per_corpus.reset_index()
    modes = [m for m in ("all_examples", "fixed_steps") if m in set(per_corpus["mode"])]
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 3.6), squeeze=False, sharey=False)
    for ax, mode in zip(axes[0], modes):
        part = per_corpus[per_corpus["mode"] == mode]
        names = [f"{n}\n({sizes[n]})" if sizes and n in sizes else n for n in part.train_dataset]
        ax.bar(names, part["mean"], yerr=part.ci95.fillna(0), color="tab:blue", capsize=2)
        ax.set(title={"all_examples": "trained on all of D \\ Z", "fixed_steps": "same number of steps"}[mode],
               ylabel="ground-truth influence")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    _save(fig, path)
    if sizes:
        per_corpus["blocks"] = per_corpus.train_dataset.map(sizes)
    return per_corpus


def heatmaps(measured: pd.DataFrame, paper: pd.DataFrame, path, title: str) -> None:
    """The numbers of a table as two annotated heatmaps on one colour scale: measured | paper."""
    rows = [m for m in METHODS if m in measured.index or m in paper.index]
    cols = list(dict.fromkeys([*paper.columns, *measured.columns]))
    frames = [f.reindex(index=rows, columns=cols).astype(float) for f in (measured, paper)]
    bound = np.nanmax([np.nanmax(np.abs(f.to_numpy())) if np.isfinite(f.to_numpy()).any() else 0 for f in frames])
    fig, axes = plt.subplots(2, 1, figsize=(2.5 + 0.8 * len(cols), 2 * (1.4 + 0.4 * len(rows))))
    for ax, frame, name in zip(axes, frames, ("measured", "paper")):
        ax.imshow(frame.to_numpy(), cmap="RdBu", vmin=-(bound or 1), vmax=bound or 1, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), [METHODS[r] for r in rows], fontsize=8)
        for (i, j), v in np.ndenumerate(frame.to_numpy()):
            ax.text(j, i, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=6)
        ax.set_title(f"{title}: {name}", fontsize=9)
    _save(fig, path)
