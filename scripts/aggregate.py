"""Turn Hydra sweep directories into the paper's tables and figures.

    python scripts/aggregate.py SWEEP [SWEEP ...] [--target table2] [--out outputs] [--split]

SWEEP is a multirun directory (it holds ``multirun.yaml``) or a folder above several, as
``make table4`` leaves them (``outputs/sweeps/table4_cpu/<time>/{table4_cpu,table4_lr_cpu}``);
``prefill`` sweeps (model training only) are skipped. For every job the sweep defines, the
script reports ok / FAILED (with the job's one-line reason) / incomplete (a directory without
results: killed or still running) / missing (no directory), and aggregates the ok ones.

Results are only pooled when the jobs' resolved configs (``.hydra/config.yaml``) differ in what
the sweeps vary and nothing else: a key may differ only if it is a swept key, lies under one, or is
set by an option of a swept config group, and then only as a function of those swept values. When
that fails the script names the keys and refuses (exit 3), or with ``--split`` writes each
consistent group separately as ``<target>-cfg<N>``.

The target (table2 … fig4) comes from ``--target`` or from the jobs' ``experiment`` key
("table4_cpu" → table4). Writes ``<out>/tables/<target>.{md,tex,csv}`` and
``<out>/figures/<target>.png``; an unknown target gets a generic correlation table.
"""

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("table2", "table3", "table4", "table5", "fig2", "fig3", "fig4")
MISSING = "<absent>"


@dataclass
class Job:
    sweep: Path
    num: int
    overrides: list[str]
    status: str  # ok | failed | incomplete | missing
    reason: str = ""
    path: Path | None = None
    config: dict = field(default_factory=dict)  # flattened .hydra/config.yaml

    @property
    def swept(self) -> dict[str, str]:
        return dict(_split(o) for o in self.overrides)

    def label(self) -> str:
        return f"{self.sweep}/{self.num} ({' '.join(self.overrides)})"


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: "{}"}
    return {prefix[:-1]: repr(node) if isinstance(node, list) else node}


# -- reading sweeps -------------------------------------------------------------------------
def find_sweeps(paths: list[Path]) -> list[Path]:
    sweeps = []
    for path in paths:
        found = [path] if (path / "multirun.yaml").is_file() else sorted(
            p.parent for p in path.rglob("multirun.yaml") if len(p.relative_to(path).parts) <= 4)
        sweeps += [s for s in found if _job_name(s) != "prefill"]
    return sweeps


def _job_name(sweep: Path) -> str:
    return (yaml.safe_load((sweep / "multirun.yaml").read_text()) or {}).get("hydra", {}).get("job", {}).get("name", "")


def expected_jobs(sweep: Path) -> tuple[list[list[str]] | None, set[str]]:
    """The jobs the sweep defines (Hydra's BasicSweeper expansion) and the keys it sweeps."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra = (yaml.safe_load((sweep / "multirun.yaml").read_text()) or {}).get("hydra", {})
    sweeper = hydra.get("sweeper", {})
    params = sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(hydra.get("overrides", {}).get("task", []))
    parsed = OverridesParser.create().parse_overrides(arguments)
    swept = {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}
    swept |= {str(k).lstrip("+~") for k in params}
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None, swept
    return BasicSweeper.split_arguments(parsed, None)[0], swept


RESULTS = {"influence.csv": {"method", "run", "train_dataset", "test_subset", "step", "is_final", "influence"},
           "ground_truth.csv": {"run", "train_dataset", "test_subset", "influence"},
           "correlations.csv": {"method", "run", "test_subset", "pearson", "spearman"}}


def _unreadable(path: Path) -> str:
    for name, columns in RESULTS.items():
        try:
            header = set(pd.read_csv(path / name, nrows=1).columns)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            return f"{name} is unreadable ({type(err).__name__})"
        if not columns <= header:
            return f"{name} lacks column(s) {', '.join(sorted(columns - header))}"
    return ""


def read_jobs(sweep: Path) -> tuple[list[Job], set[str]]:
    expected, swept = expected_jobs(sweep)
    found = {}
    for hydra_dir in sweep.rglob(".hydra"):
        meta = yaml.safe_load((hydra_dir / "hydra.yaml").read_text()) if (hydra_dir / "hydra.yaml").is_file() else {}
        num = meta.get("hydra", {}).get("job", {}).get("num")
        if num is None:
            continue
        overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
        found[int(num)] = (hydra_dir.parent, overrides)
    nums = sorted(set(range(len(expected))) | set(found)) if expected is not None else sorted(found)
    jobs = []
    for num in nums:
        if num not in found:
            jobs.append(Job(sweep, num, expected[num], "missing", "no job directory"))
            continue
        path, overrides = found[num]
        job = Job(sweep, num, overrides, "ok", path=path)
        config = yaml.safe_load((path / ".hydra" / "config.yaml").read_text()) if (path / ".hydra/config.yaml").is_file() else {}
        job.config = flatten(config or {})
        if (path / "FAILED").is_file():
            job.status, job.reason = "failed", (path / "FAILED").read_text().strip().splitlines()[0]
        elif not all((path / f).is_file() for f in RESULTS):
            job.status, job.reason = "incomplete", "no results and no FAILED file (killed, or still running)"
        else:
            problem = _unreadable(path)
            if problem:
                job.status, job.reason = "failed", problem
        jobs.append(job)
    return jobs, swept


# -- config consistency -----------------------------------------------------------------------
def _conf_dir(jobs: list[Job]) -> Path:
    for job in jobs:
        meta = job.path / ".hydra" / "hydra.yaml" if job.path else None
        if meta and meta.is_file():
            for source in yaml.safe_load(meta.read_text())["hydra"]["runtime"]["config_sources"]:
                if source.get("provider") == "main" and source.get("schema") == "file":
                    return Path(source["path"])
    return REPO / "conf"


def group_keys(conf_dir: Path, group: str, options: set[str]) -> set[str]:
    """Config keys that the given options of config group ``group`` set (a swept group explains them)."""
    keys = set()
    for option in options:
        path = conf_dir / group / f"{option}.yaml"
        if not path.is_file():
            keys.add(f"{group}.*")
            continue
        text = path.read_text()
        node = {k: v for k, v in (yaml.safe_load(text) or {}).items() if k != "defaults"}
        global_package = "@package _global_" in text.split("\n\n")[0]
        keys |= set(flatten(node if global_package else {group: node}))
    return keys


def inconsistencies(jobs: list[Job], swept: set[str]) -> list[str]:
    """Config keys whose differences between jobs the swept values do not explain."""
    if len(jobs) < 2:
        return []
    conf_dir = _conf_dir(jobs)
    explained = {s: group_keys(conf_dir, s, {j.swept.get(s) for j in jobs} - {None})
                 for s in swept if (conf_dir / s).is_dir()}
    bad = []
    for key in sorted(set().union(*(j.config for j in jobs))):
        values = [j.config.get(key, MISSING) for j in jobs]
        if len(set(map(str, values))) == 1:
            continue
        explainers = [s for s in sorted(swept) if key == s or key.startswith(s + ".")
                      or key in explained.get(s, ()) or f"{s}.*" in explained.get(s, ())]
        by_setting: dict[tuple, set] = {}
        for job, value in zip(jobs, values):
            by_setting.setdefault(tuple(job.swept.get(s) for s in explainers), set()).add(str(value))
        if not explainers or any(len(v) > 1 for v in by_setting.values()):
            bad.append(key)
    return bad


def partition(jobs: list[Job], keys: list[str]) -> list[list[Job]]:
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(str(job.config.get(k, MISSING)) for k in keys), []).append(job)
    return list(groups.values())


# -- results ----------------------------------------------------------------------------------
def load(jobs: list[Job]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """influence, ground truth and correlations of the ok jobs, with the settings as columns."""
    parts = {"influence": [], "truth": [], "corr": []}
    for job in jobs:
        c = job.config
        settings = {"data": c.get("data.name"), "sizes": c.get("data.sizes"), "testset": c.get("testset.name"),
                    "optim": c.get("optim.name"), "lr": float(c.get("optim.lr", math.nan)),
                    "batch_size": c.get("unlearn.batch_size"), "epochs": c.get("unlearn.epochs"),
                    "mode": c.get("groundtruth.mode"), "job": str(job.path)}
        for name, file in (("influence", "influence.csv"), ("truth", "ground_truth.csv"), ("corr", "correlations.csv")):
            frame = pd.read_csv(job.path / file).assign(**settings)
            if name == "truth":
                frame["method"] = c.get("method.name")
            parts[name].append(frame)
    return tuple(pd.concat(p, ignore_index=True) for p in parts.values())


def build(target: str, jobs: list[Job], out: Path, name: str) -> list[Path]:
    from untrac import paper
    from untrac.report import write_table

    influence, truth, corr = load(jobs)
    tables, figures = out / "tables" / name, out / "figures" / f"{name}.png"
    figures.parent.mkdir(parents=True, exist_ok=True)
    truth_once = truth.drop_duplicates(["data", "sizes", "mode", "run", "train_dataset", "test_subset"])
    if target == "table2":
        display, measured, ref = paper.table2(influence[influence.is_final], truth_once)
        caption = "Table 2: standardised influence of each training dataset: the mean over runs, z-scored (measured vs paper)"
    elif target in ("table3", "table5"):
        metric = "pearson" if target == "table3" else "spearman"
        display, measured, ref = paper.table3_5(corr, metric)
        caption = f"Table {target[-1]}: {metric.title()} correlation with the ground truth, mean ± std over runs [95 % bootstrap interval]"
    elif target == "table4":
        display, measured, ref = paper.table4(corr)
        caption = "Table 4: Pearson correlation across optimizers (lr 5e-5) and Adam learning rates, mean ± std over runs [95 % bootstrap interval]"
    elif target == "fig2":
        display = paper.figure2(influence[influence.method.isin(["untrac", "untrac_inv"])], figures)
        caption = "Figure 2: influence over unlearning steps, mean over runs and 95% CI half-width"
    elif target == "fig3":
        curves = []
        for (job, method), group in influence.groupby(["job", "method"], sort=False):
            steps = paper.pearson_by_step(group, truth[truth.job == job], [])
            per_epoch = group.step.max() / float(group.epochs.iloc[0])
            curves.append(steps.assign(method=method, batch_size=int(group.batch_size.iloc[0]),
                                       epoch=steps.step / per_epoch))
        display = paper.figure3(pd.concat(curves, ignore_index=True), figures)
        caption = "Figure 3: Pearson correlation over unlearning epochs, mean over runs and 95% CI half-width"
    elif target == "fig4":
        from untrac.config import DataConfig
        from untrac.data.prepare import pile8_sizes

        data = {k[5:]: v for k, v in jobs[0].config.items() if k.startswith("data.")}
        sizes = pile8_sizes(DataConfig(**{k: v for k, v in data.items() if "." not in k and k != "custom_sizes"}))
        display = paper.figure4(truth_once, figures, sizes)
        caption = "Figure 4: ground-truth influence per corpus (mean over test subsets, 95% CI), all examples vs fixed steps"
    else:
        columns = {"data": "data", "data.sizes": "sizes", "testset": "testset", "optim": "optim", "optim.lr": "lr",
                   "unlearn.batch_size": "batch_size", "unlearn.epochs": "epochs", "groundtruth.mode": "mode"}
        keys = sorted({columns[k] for j in jobs for k in j.swept if k in columns})
        long = paper.summary_long(corr, keys or ["testset"], "pearson")
        long["value"] = [paper.with_count(paper.mean_std(m, s, lo, hi), k, n)
                         for m, s, k, n, lo, hi in zip(long["mean"], long["std"], long["scored"], long["total"],
                                                       long["ci_low"], long["ci_high"])]
        display = long.pivot_table(index="method", columns=keys or ["testset"], values="value", aggfunc="first")
        caption = (f"{name}: Pearson correlation with the ground truth, mean ± std over runs "
                   "[95 % bootstrap interval over (run, test subset) pairs]")
    if target in ("table2", "table3", "table4", "table5"):
        paper.heatmaps(measured, ref, figures, caption.split(":")[0])
    if target in ("fig2", "fig3", "fig4"):
        display = display.set_index(display.columns[0])  # the plotted series, one row per point
    write_table(display, tables, caption)
    if target in ("table3", "table4", "table5") or target not in TARGETS:  # tables of final correlations
        md = tables.with_suffix(".md")
        md.write_text(md.read_text() + "\n" + paper.scored_note(corr) + "\n")
    return [tables.with_suffix(".md"), figures] if figures.is_file() else [tables.with_suffix(".md")]


def report(jobs: list[Job]) -> list[str]:
    counts = {s: sum(j.status == s for j in jobs) for s in ("ok", "failed", "incomplete", "missing")}
    lines = ["## Jobs", "", ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no jobs", ""]
    for job in jobs:
        if job.status != "ok":
            lines.append(f"- {job.status.upper()}: {job.label()}: {job.reason}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--target", choices=TARGETS)
    parser.add_argument("--out", type=Path, default=Path("outputs"))
    parser.add_argument("--name", help="file name of the outputs (default: the target)")
    parser.add_argument("--split", action="store_true", help="aggregate configs that differ separately")
    args = parser.parse_args(argv)
    sweeps = find_sweeps(args.sweeps)
    if not sweeps:
        print(f"aggregate: no sweep (multirun.yaml) under {', '.join(map(str, args.sweeps))}", file=sys.stderr)
        return 1
    jobs, swept = [], set()
    for sweep in sweeps:
        found, keys = read_jobs(sweep)
        jobs += found
        swept |= keys
    lines = report(jobs)
    print("\n".join(lines))
    ok = [j for j in jobs if j.status == "ok"]
    if not ok:
        print("aggregate: no finished job to aggregate", file=sys.stderr)
        return 1
    experiment = str(ok[0].config.get("experiment") or "results")
    target = args.target or next((t for t in TARGETS if experiment.split("_")[0] == t), None) or experiment
    bad = inconsistencies(ok, swept)
    groups = partition(ok, bad) if bad else [ok]
    if len(groups) > 1:
        print(f"aggregate: the jobs' configs differ in keys the sweep does not vary: {', '.join(bad)}", file=sys.stderr)
        for i, group in enumerate(groups, 1):
            values = ", ".join(f"{k}={group[0].config.get(k, MISSING)}" for k in bad)
            print(f"  config {i} ({values}): {len(group)} jobs, e.g. {group[0].label()}", file=sys.stderr)
        if not args.split:
            print("aggregate: refusing to mix them; rerun with --split to aggregate each separately", file=sys.stderr)
            return 3
    for i, group in enumerate(groups, 1):
        name = (args.name or target) + (f"-cfg{i}" if len(groups) > 1 else "")
        written = build(target, group, args.out, name)
        note = [f"Sweeps: {', '.join(str(s) for s in sweeps)}"]
        if len(groups) > 1:
            note.append("Config: " + ", ".join(f"{k}={group[0].config.get(k, MISSING)}" for k in bad))
        md = written[0]
        md.write_text(md.read_text() + "\n" + "\n".join(note + [""] + report(jobs)) + "\n")
        print(f"aggregate: wrote {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
