"""Turn Hydra sweep directories into the paper's tables and figures.

    python -m untrac.paper aggregate SWEEP [SWEEP ...] [--target table2] [--out outputs] [--name N] [--split]

SWEEP is a multirun directory (it holds ``multirun.yaml``) or a folder above several, as
``make table4`` leaves them (``outputs/sweeps/table4_cpu/<time>/{table4_cpu,table4_lr_cpu}``);
``train-models`` multiruns (model training only; ``prefill`` in older sweeps) are skipped. For every job the sweep defines, this
reports ok / FAILED (with the job's one-line reason) / incomplete / missing (``sweeps``), and
aggregates the ok ones.

Jobs whose configs differ in anything but what the sweeps vary (``pooling``) are not pooled: the
keys are named and the run refused (exit 3), or with ``--split`` each consistent group is written
separately as ``<target>-cfg<N>``.

The target (table2 … fig4) comes from ``--target`` or from the jobs' ``experiment`` key
("table4", or "table4_cpu" of sweeps made before the scale group → table4). Writes
``<out>/tables/<target>.{md,tex,csv}`` and
``<out>/figures/<target>.png``; an unknown target gets a generic correlation table.
"""

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from untrac.errors import UntracError
from untrac.paper import figures, tables
from untrac.paper.pooling import MISSING, inconsistencies, partition
from untrac.paper.sweeps import Job, find_sweeps, read_jobs
from untrac.record import CORRELATIONS, INFLUENCE, TRUTH, load_config, read_frame
from untrac.report import mean_std, write_table

TARGETS = ("table2", "table3", "table4", "table5", "fig2", "fig3", "fig4", "lds")
TABLES = ("table2", "table3", "table4", "table5")
FIGURES = ("fig2", "fig3", "fig4")


def load(jobs: list[Job]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """influence, ground truth and correlations of the ok jobs, with the settings as columns."""
    parts = {"influence": [], "truth": [], "corr": []}
    for job in jobs:
        c = job.config
        settings = {"data": c.get("data.name"), "sizes": c.get("data.sizes"), "testset": c.get("testset.name"),
                    "optim": c.get("optim.name"), "lr": float(c.get("optim.lr", math.nan)),
                    "batch_size": c.get("unlearn.batch_size"), "epochs": c.get("unlearn.epochs"),
                    "mode": c.get("groundtruth.mode"), "job": str(job.path)}
        for name, table in (("influence", INFLUENCE), ("truth", TRUTH), ("corr", CORRELATIONS)):
            frame = read_frame(job.path, table).assign(**settings)
            if name == "truth":
                frame["method"] = c.get("method.name")
            parts[name].append(frame)
    return tuple(pd.concat(p, ignore_index=True) for p in parts.values())


# -- one builder per target: (frames, jobs, figure path) → (display table, caption, heatmap frames) ------
def _table2(f, jobs, png):
    display, measured, ref = tables.table2(f["influence"][f["influence"].is_final], f["truth_once"])
    return display, ("Table 2: standardised influence of each training dataset: the mean over runs, "
                     "z-scored (measured vs paper)"), (measured, ref)


def _table3_5(target):
    metric = "pearson" if target == "table3" else "spearman"

    def build(f, jobs, png):
        display, measured, ref = tables.table3_5(f["corr"], metric)
        return display, (f"Table {target[-1]}: {metric.title()} correlation with the ground truth, "
                         "mean ± std over runs [95 % bootstrap interval] p=<median exact permutation p-value "
                         "over (run, test subset) pairs>"), (measured, ref)
    return build


def _table4(f, jobs, png):
    display, measured, ref = tables.table4(f["corr"])
    return display, ("Table 4: Pearson correlation across optimizers (lr 5e-5) and Adam learning rates, "
                     "mean ± std over runs [95 % bootstrap interval] p=<median exact permutation p-value "
                     "over (run, test subset) pairs>"), (measured, ref)


def _fig2(f, jobs, png):
    influence = f["influence"]
    display = figures.figure2(influence[influence.method.isin(["untrac", "untrac_inv"])], png)
    return display, "Figure 2: influence over unlearning steps, mean over runs and 95% CI half-width", None


def _fig3(f, jobs, png):
    curves, truth = [], f["truth"]
    for (job, method), group in f["influence"].groupby(["job", "method"], sort=False):
        steps = figures.pearson_by_step(group, truth[truth.job == job], [])
        per_epoch = group.step.max() / float(group.epochs.iloc[0])
        curves.append(steps.assign(method=method, batch_size=int(group.batch_size.iloc[0]),
                                   epoch=steps.step / per_epoch))
    display = figures.figure3(pd.concat(curves, ignore_index=True), png)
    return display, "Figure 3: Pearson correlation over unlearning epochs, mean over runs and 95% CI half-width", None


def _fig4(f, jobs, png):
    from untrac.data.prepare import pile8_sizes

    sizes = pile8_sizes(load_config(jobs[0].path).data)  # the run's typed data config, as it ran
    display = figures.figure4(f["truth_once"], png, sizes)
    return display, ("Figure 4: ground-truth influence per corpus (mean over test subsets, 95% CI), "
                     "all examples vs fixed steps"), None


def _generic(name):
    """Any other experiment: Pearson per method against the settings the sweeps vary."""
    columns = {"data": "data", "data.sizes": "sizes", "testset": "testset", "optim": "optim", "optim.lr": "lr",
               "unlearn.batch_size": "batch_size", "unlearn.epochs": "epochs", "groundtruth.mode": "mode"}

    def build(f, jobs, png):
        keys = sorted({columns[k] for j in jobs for k in j.swept if k in columns}) or ["testset"]
        long = tables.summary_long(f["corr"], keys, "pearson")
        long["value"] = [tables.with_count(mean_std(m, s, lo, hi), k, n)
                         for m, s, k, n, lo, hi in zip(long["mean"], long["std"], long["scored"], long["total"],
                                                       long["ci_low"], long["ci_high"])]
        display = long.pivot_table(index="method", columns=keys, values="value", aggfunc="first")
        return display, (f"{name}: Pearson correlation with the ground truth, mean ± std over runs "
                         "[95 % bootstrap interval over (run, test subset) pairs]"), None
    return build


def _lds(f, jobs, png):
    from untrac.paper import lds

    return (*lds.build(jobs, png.parent.parent / "tables" / png.stem, png), None)


BUILDERS = {"lds": _lds, "table2": _table2, "table3": _table3_5("table3"), "table5": _table3_5("table5"), "table4": _table4,
            "fig2": _fig2, "fig3": _fig3, "fig4": _fig4}


def build(target: str, jobs: list[Job], out: Path, name: str) -> list[Path]:
    """Write the target's table (and figure) for ``jobs`` as ``<out>/{tables,figures}/<name>.*``."""
    influence, truth, corr = load(jobs)
    frames = {"influence": influence, "truth": truth, "corr": corr,
              "truth_once": truth.drop_duplicates(["data", "sizes", "mode", "run", "train_dataset", "test_subset"])}
    stem, png = out / "tables" / name, out / "figures" / f"{name}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    display, caption, heat = BUILDERS.get(target, _generic(name))(frames, jobs, png)
    if heat is not None:
        figures.heatmaps(*heat, png, caption.split(":")[0])
    if target in FIGURES:
        display = display.set_index(display.columns[0])  # the plotted series, one row per point
    write_table(display, stem, caption)
    if target in ("table3", "table4", "table5") or target not in TARGETS:  # tables of final correlations
        md = stem.with_suffix(".md")
        md.write_text(md.read_text() + "\n" + tables.scored_note(corr) + "\n")
    return [stem.with_suffix(".md"), png] if png.is_file() else [stem.with_suffix(".md")]


def report(jobs: list[Job]) -> list[str]:
    """Markdown lines: the count of jobs per status, then one line per job that is not ok."""
    counts = {s: sum(j.status == s for j in jobs) for s in ("ok", "failed", "incomplete", "missing")}
    lines = ["## Jobs", "", ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no jobs", ""]
    for job in jobs:
        if job.status != "ok":
            lines.append(f"- {job.status.upper()}: {job.label()}: {job.reason}")
    return lines


def _groups(ok: list[Job], swept: set[str], split: bool) -> tuple[list[list[Job]], list[str]] | None:
    """The poolable groups of ``ok`` and the keys that separate them; None when they must not be mixed."""
    bad = inconsistencies(ok, swept)
    groups = partition(ok, bad) if bad else [ok]
    if len(groups) > 1:
        print(f"aggregate: the jobs' configs differ in keys the sweep does not vary: {', '.join(bad)}", file=sys.stderr)
        for i, group in enumerate(groups, 1):
            values = ", ".join(f"{k}={group[0].config.get(k, MISSING)}" for k in bad)
            print(f"  config {i} ({values}): {len(group)} jobs, e.g. {group[0].label()}", file=sys.stderr)
        if not split:
            print("aggregate: refusing to mix them; rerun with --split to aggregate each separately", file=sys.stderr)
            return None
    return groups, bad


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m untrac.paper aggregate", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--target", choices=TARGETS)
    parser.add_argument("--out", type=Path, default=Path("outputs"))
    parser.add_argument("--name", help="file name of the outputs (default: the target)")
    parser.add_argument("--split", action="store_true", help="aggregate configs that differ separately")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sweeps = find_sweeps(args.sweeps)
    if not sweeps:
        print(f"aggregate: no sweep (multirun.yaml) under {', '.join(map(str, args.sweeps))}", file=sys.stderr)
        return 1
    jobs, swept = [], set()
    for sweep in sweeps:
        found, keys = read_jobs(sweep)
        jobs += found
        swept |= keys
    print("\n".join(report(jobs)))
    ok = [j for j in jobs if j.status == "ok"]
    if not ok:
        print("aggregate: no finished job to aggregate", file=sys.stderr)
        return 1
    experiment = str(ok[0].config.get("experiment") or "results")
    target = args.target or next((t for t in TARGETS if experiment.split("_")[0] == t), None) or experiment
    # lds pools sweeps of different models and data on purpose: its builder keeps each data set apart
    grouped = ([ok], []) if target == "lds" else _groups(ok, swept, args.split)
    if grouped is None:
        return 3
    groups, bad = grouped
    for i, group in enumerate(groups, 1):
        name = (args.name or target) + (f"-cfg{i}" if len(groups) > 1 else "")
        try:
            written = build(target, group, args.out, name)
        except UntracError as err:  # a job's record does not read back (e.g. its config): one line
            print(f"aggregate: error: {err}", file=sys.stderr)
            return 2
        note = [f"Sweeps: {', '.join(str(s) for s in sweeps)}"]
        if len(groups) > 1:
            note.append("Config: " + ", ".join(f"{k}={group[0].config.get(k, MISSING)}" for k in bad))
        written[0].write_text(written[0].read_text() + "\n" + "\n".join(note + [""] + report(jobs)) + "\n")
        print(f"aggregate: wrote {', '.join(str(p) for p in written)}")
    return 0
