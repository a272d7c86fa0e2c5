"""``make lds``: every method against a bank of subset retrains (DESIGN §2, "Beyond leave-one-out").

From the jobs of the ``lds`` / ``lds_pile8`` sweeps (``groundtruth.mode=subsets``): one table of
methods × data with the group LDS and the leave-out correlation (Spearman, its exact p-value, top-1),
with the noise floor of each as a last row; one table of each dataset's Shapley value beside its
leave-out influence, with the bank's additivity; and a figure of both.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd

from untrac.metrics import bootstrap_ci
from untrac.paper.figures import _save, plt
from untrac.paper.published import TESTSETS, in_order, label
from untrac.record import CORRELATIONS, LDS, SHAPLEY, read_frame, read_metrics
from untrac.report import mean_std, write_table


def data_label(config: dict) -> str:
    """synthA, synthB, or pile8 with its test set (the bank's test subsets differ per test set)."""
    name = str(config.get("data.name"))
    return name if name.startswith("synth") else f"{name} {TESTSETS.get(config.get('testset.name'), '')}".strip()


def gather(jobs) -> dict[str, pd.DataFrame]:
    """lds, correlations and shapley of every job, with a ``data`` column; ``floor``: per data, the
    bank's LDS floor, the leave-out noise floor and the additivity the run recorded (metrics.json)."""
    parts: dict[str, list] = {"lds": [], "corr": [], "shapley": [], "floor": []}
    seen = set()
    for job in jobs:
        data = data_label(job.config)
        parts["lds"].append(read_frame(job.path, LDS).assign(data=data))
        parts["corr"].append(read_frame(job.path, CORRELATIONS).assign(data=data))
        if data in seen:  # the bank (and so Shapley, additivity, the floors) is shared by every method's job
            continue
        seen.add(data)
        if (job.path / SHAPLEY.file).is_file():  # only a bank of every subset has Shapley values
            parts["shapley"].append(read_frame(job.path, SHAPLEY).assign(data=data))
        metrics = read_metrics(job.path)  # what the run computed from its bank (report.write_run)
        bank, floor = metrics.get("bank", {}), metrics.get("truth_agreement", {})
        parts["floor"].append(pd.DataFrame([{"data": data, "lds": _number(bank.get("lds_floor")),
                                             "spearman": _number(floor.get("spearman")),
                                             "additivity": _number(bank.get("additivity"))}]))
    return {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in parts.items()}


def _number(value) -> float:
    return math.nan if value is None else float(value)  # metrics.json writes an undefined number as null


def _cell(values: pd.Series) -> str:
    values = values.astype(float)
    finite = values[np.isfinite(values)]
    if finite.empty:
        return "–"
    low, high = bootstrap_ci(finite)
    return mean_std(float(finite.mean()), float(finite.std()) if len(finite) > 1 else math.nan, low, high)


def lds_table(f: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Methods × (data: LDS, leave-out Spearman, its exact p, top-1), mean ± std [95 % CI] over
    (run, test subset); the last row is each measure's noise floor (seed halves)."""
    rows = {}
    datas = list(dict.fromkeys(f["lds"].data))
    for method in in_order(f["lds"].method.unique()):
        row = {}
        for data in datas:
            lds = f["lds"][(f["lds"].method == method) & (f["lds"].data == data)]
            corr = f["corr"][(f["corr"].method == method) & (f["corr"].data == data)]
            row[f"{data} LDS"] = _cell(lds.lds)
            row[f"{data} leave-out Spearman"] = _cell(corr.spearman)
            row[f"{data} p"] = f"{corr.spearman_p.median():.3f}" if corr.spearman_p.notna().any() else "–"
            row[f"{data} top-1"] = f"{corr.top1.mean():.2f}" if corr.top1.notna().any() else "–"
        rows[label(method)] = row
    floor = f["floor"].set_index("data")
    rows["noise floor (seed halves)"] = {
        **{f"{d} LDS": f"{floor.lds.get(d, math.nan):.3f}" for d in datas},
        **{f"{d} leave-out Spearman": f"{floor.spearman.get(d, math.nan):.3f}" for d in datas}}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table[[c for d in datas for c in table.columns if c.startswith(f"{d} ")]].fillna("")


def shapley_table(f: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """(data, training dataset) → Shapley value, leave-out influence, mean over runs and test
    subsets; with the bank's additivity (R², mean over test subsets) per data."""
    if f["shapley"].empty:
        return pd.DataFrame()
    table = f["shapley"].groupby(["data", "train_dataset"], sort=False)[["shapley", "loo"]].mean()
    additivity = f["floor"].set_index("data").additivity
    table["additivity (R², per data)"] = [additivity.get(d, math.nan) for d, _ in table.index]
    return table.round(4)


def figure(f: dict[str, pd.DataFrame], path: Path) -> None:
    """Left: LDS per method and data (mean over test subsets), dashed: the bank's floor.
    Right: Shapley value against leave-out influence, one point per (data, dataset, test subset)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
    datas = list(dict.fromkeys(f["lds"].data))
    methods = in_order(f["lds"].method.unique())
    width = 0.8 / max(len(datas), 1)
    floor = f["floor"].set_index("data").lds
    for i, data in enumerate(datas):
        means = f["lds"][f["lds"].data == data].groupby("method").lds.mean().reindex(methods)
        bars = left.bar(np.arange(len(methods)) + i * width, means.to_numpy(float), width, label=data)
        if np.isfinite(floor.get(data, math.nan)):
            left.axhline(floor[data], color=bars.patches[0].get_facecolor(), linestyle="--", linewidth=1)
    left.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, [label(m) for m in methods], rotation=40,
                    ha="right", fontsize=8)
    left.set(ylabel="group LDS (Spearman over subsets)", title="Group LDS; dashed: the bank's seed-halves floor")
    left.axhline(0, color="grey", linewidth=0.5)
    left.legend(fontsize=7)
    for data, group in f["shapley"].groupby("data", sort=False):
        right.scatter(group.loo, group.shapley, s=14, label=data)
    if not f["shapley"].empty:
        bound = float(np.nanmax(np.abs(f["shapley"][["loo", "shapley"]].to_numpy(float))))
        right.plot([-bound, bound], [-bound, bound], color="grey", linewidth=0.5)
        right.legend(fontsize=7)
    right.set(xlabel="leave-out influence v({Z})", ylabel="Shapley value", title="Shapley vs leave-one-out")
    _save(fig, path)


def build(jobs, stem: Path, png: Path) -> tuple[pd.DataFrame, str]:
    """Write the Shapley table beside ``stem`` and the figure; return the LDS table and its caption."""
    frames = gather(jobs)
    shapley = shapley_table(frames)
    if not shapley.empty:
        shapley.index = [f"{data} {dataset}" for data, dataset in shapley.index]
        shapley.index.name = "dataset"
        write_table(shapley, stem.with_name(stem.name + "_shapley"),
                    "Exact Shapley value of each training dataset beside its leave-out influence (mean over runs "
                    "and test subsets), and the additivity of the measured effects")
    figure(frames, png)
    return lds_table(frames), ("Group LDS and leave-out agreement of every method, mean ± std [95 % bootstrap "
                               "interval] over (run, test subset); p: median exact permutation p-value of the "
                               "leave-out Spearman; top-1: share of pairs whose first dataset is the truth's")
