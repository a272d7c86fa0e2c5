"""The paper's figures (2, 3, 4) and the heatmap drawn beside every table."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from untrac.metrics import correlate  # noqa: E402
from untrac.paper.published import SYNTHETIC, in_order, label  # noqa: E402


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
            # UnTrac unlearns a training dataset and watches the test loss; UnTrac-Inv the reverse (Eq. 2-4)
            watched = "training-dataset" if method == "untrac_inv" else "test"
            ax.set(title=f"{label(method)}, {data}", xlabel="unlearning step", ylabel=f"influence (Δ {watched} loss)")
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
        ax.set(title=label(method), xlabel="unlearning epoch", ylabel="Pearson with ground truth", ylim=(-1.05, 1.05))
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
    rows = in_order([*measured.index, *paper.index])
    cols = list(dict.fromkeys([*paper.columns, *measured.columns]))
    frames = [f.reindex(index=rows, columns=cols).astype(float) for f in (measured, paper)]
    bound = np.nanmax([np.nanmax(np.abs(f.to_numpy())) if np.isfinite(f.to_numpy()).any() else 0 for f in frames])
    fig, axes = plt.subplots(2, 1, figsize=(2.5 + 0.8 * len(cols), 2 * (1.4 + 0.4 * len(rows))))
    for ax, frame, name in zip(axes, frames, ("measured", "paper")):
        ax.imshow(frame.to_numpy(), cmap="RdBu", vmin=-(bound or 1), vmax=bound or 1, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), [label(r) for r in rows], fontsize=8)
        for (i, j), v in np.ndenumerate(frame.to_numpy()):
            ax.text(j, i, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=6)
        ax.set_title(f"{title}: {name}", fontsize=9)
    _save(fig, path)
