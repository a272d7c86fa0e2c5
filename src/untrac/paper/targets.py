"""Run one of the paper's results end to end: ``make table2`` … ``make fig4`` call this.

    python -m untrac.paper TARGET [--scale cpu|paper] [--launcher auto|basic|joblib|submitit_local|submitit_slurm]
                                  [--out outputs] [--fresh] [-- extra overrides ...]

1. **models**: the planner (``untrac.paper.plan``) composes every job of the target's sweeps with
   Hydra's own sweep expansion and collects the union of the models they look up (θ0 with its
   TracIn checkpoints, each θ−Z, the bank's θ−S: ``untrac.store.ModelSpec``, one per cache key)
   into ``<root>/models.json``; ``python -m untrac.paper train-models`` trains one entry per job —
   independent jobs that fill the shared cache, so a parallel launcher or a cluster trains them at once;
2. **sweep**: each experiment part of the target (``experiment=<part> scale=<scale>``, from
   ``conf/experiment/<part>.yaml`` and ``conf/scale/``) runs as a Hydra multirun of
   ``python -m untrac.run``; the scoring jobs find the models in the cache;
3. **aggregate**: ``untrac.paper.aggregate`` turns the sweep directories into
   ``<out>/tables/<target>.{md,tex,csv}`` and ``<out>/figures/<target>.png``, listing failed or
   missing jobs.

Sweeps go to ``<out>/sweeps/<experiment>_<scale>/<time>/<part>_<scale>/``. Table 5 is the Spearman view of Table 3's
sweep: ``table5`` reuses the latest finished ``table3`` sweep of the same scale and overrides
unless ``--fresh``. The launcher is a command-line choice (``hydra/launcher=…``); for the submitit
launchers a job time limit and one CPU per thread are added (override with ``-- hydra.launcher.*``).
``auto`` (the default) is joblib at cpu scale — one single-threaded job per core, since a tiny
model cannot use a second core (config.yaml ``threads: 1``) and Hydra's basic launcher runs the
jobs one after another — and basic at paper scale (one GPU: jobs in turn).
"""

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from untrac.paper import REPO, plan

# target → the experiment parts it runs (each `experiment=<part> scale=<scale>` is one sweep)
PARTS = {"table2": ["table2"], "table3": ["table3"], "table5": ["table3"], "table4": ["table4", "table4_lr"],
         "fig2": ["fig2", "fig2_inv"], "fig3": ["fig3", "fig3_b256"], "fig4": ["fig4"], "lds": ["lds", "lds_pile8"]}
LAUNCHER_ARGS = {  # job limits for the submitit launchers, per scale (minutes)
    "submitit_local": {"cpu": ["hydra.launcher.timeout_min=120"], "paper": ["hydra.launcher.timeout_min=4320"]},
    "submitit_slurm": {"cpu": ["hydra.launcher.timeout_min=120", "hydra.launcher.cpus_per_task=1"],
                       "paper": ["hydra.launcher.timeout_min=4320", "hydra.launcher.cpus_per_task=8",
                                 "hydra.launcher.gpus_per_node=1", "hydra.launcher.mem_gb=64"]},
}


def compose(experiment: str, scale: str, extra: list[str]):
    """The experiment's config at ``scale`` with its hydra node, as ``untrac.run`` sees it (sweeps left out)."""
    with plan.Composer() as hydra_compose:
        return hydra_compose(plan.plain(plan.part_overrides(experiment, scale, extra)), hydra=True)


def run(command: list[str], log: Path) -> int:
    """Run a sweep, its output into ``log`` (progress bars and all), a one-line note here."""
    print(f"+ {' '.join(command)}  (log: {log})", flush=True)
    with log.open("w") as handle:
        return subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                               env={**os.environ, "HYDRA_FULL_ERROR": "1"})


def fingerprint(experiment: str, scale: str, extra: list[str]) -> str:
    """What a finished sweep must match to be reused: the experiment, the overrides, the conf files."""
    blob = hashlib.sha256()
    for path in sorted((REPO / "conf").rglob("*.yaml")):
        blob.update(path.read_bytes())
    blob.update(json.dumps([experiment, scale, extra]).encode())
    return blob.hexdigest()[:16]


def reusable(base: Path, key: str) -> Path | None:
    for root in sorted(base.glob("*/"), reverse=True):
        meta = root / "meta.json"
        if meta.is_file() and json.loads(meta.read_text()) == {"fingerprint": key, "complete": True}:
            return root
    return None


def resolve_launcher(launcher: str, scale: str) -> str:
    """``auto``: joblib at cpu scale when its Hydra plugin is installed, else basic (see above)."""
    if launcher != "auto":
        return launcher
    try:  # the plugin (installed by `make install`) is found, not imported: Hydra imports it when launching
        joblib = importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None
    except ModuleNotFoundError:  # no Hydra plugin at all (find_spec imports the parent package)
        joblib = False
    return "joblib" if joblib and scale == "cpu" else "basic"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m untrac.paper", description=__doc__.split("\n\n")[0],
        epilog="Also: `python -m untrac.paper aggregate SWEEP...` (tables from finished sweeps) and "
               "`python -m untrac.paper train-models -m plan.file=PLAN plan.index=range(0,N)` (train a plan's models).")
    parser.add_argument("target", choices=sorted(PARTS))
    parser.add_argument("--scale", default="cpu", choices=["cpu", "paper"])
    parser.add_argument("--launcher", default="auto",
                        help="auto (joblib at cpu scale, basic at paper scale), basic, joblib, submitit_local, "
                             "submitit_slurm")
    parser.add_argument("--out", type=Path, default=Path("outputs"))
    parser.add_argument("--fresh", action="store_true", help="never reuse a finished sweep")
    return parser


def train_models(parts: list[str], scale: str, extra: list[str], launch: list[str], root: Path) -> bool:
    """Plan the union of the models every job of ``parts`` needs (``untrac.paper.plan``) and train it
    as one ``train-models`` multirun (independent jobs on the chosen launcher); whether all succeeded."""
    planned = plan.plan_parts(parts, scale, extra)
    plan_file = root / "models.json"
    plan.write_plan(planned, plan_file)
    print(f"{len(planned)} models to train or find in the cache (plan: {plan_file})", flush=True)
    if not planned:
        return True
    for line in plan.pretrain_first(planned):
        print(line, flush=True)
    command = [sys.executable, "-m", "untrac.paper", plan.JOB_NAME, "-m", f"plan.file={plan_file}",
               f"plan.index=range(0,{len(planned)})", *launch, *[o for o in extra if o.startswith("hydra.launcher")],
               f"hydra.job.name={plan.JOB_NAME}", f"hydra.sweep.dir={root / plan.JOB_NAME}"]
    return run(command, root / f"{plan.JOB_NAME}.log") == 0


def sweep_all(parts: list[str], scale: str, extra: list[str], launch: list[str], root: Path) -> bool:
    """Train the models of every part once, then run each part's sweep under ``root``; whether
    every command succeeded."""
    start = time.perf_counter()
    complete = train_models(parts, scale, extra, launch, root)
    print(f"models ready after {time.perf_counter() - start:.0f} s", flush=True)
    for part in parts:
        command = [sys.executable, "-m", "untrac.run", "-m", f"experiment={part}", f"scale={scale}", *launch, *extra,
                   f"hydra.sweep.dir={root / f'{part}_{scale}'}"]
        complete &= run(command, root / f"{part}_{scale}.log") == 0
    return complete


def main(argv: list[str] | None = None) -> int:
    from untrac.paper import aggregate

    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:cut])
    extra = argv[cut + 1:]  # Hydra overrides for every job
    parts = PARTS[args.target]
    family = f"{compose(parts[0], args.scale, extra).experiment}_{args.scale}"
    base = (args.out / "sweeps" / family).resolve()
    key = fingerprint(family, args.scale, extra)
    root = None if args.fresh or args.target != "table5" else reusable(base, key)
    launcher = resolve_launcher(args.launcher, args.scale)
    print(f"launcher: {launcher}", flush=True)
    launch = [f"hydra/launcher={launcher}", *LAUNCHER_ARGS.get(launcher, {}).get(args.scale, [])]
    start = time.perf_counter()
    if root:
        print(f"reusing the finished sweep {root}")
    else:
        root = base / (time.strftime("%Y-%m-%d_%H-%M-%S-") + f"{time.time() % 1 * 1e6:06.0f}")
        root.mkdir(parents=True, exist_ok=True)
        complete = sweep_all(parts, args.scale, extra, launch, root)
        (root / "meta.json").write_text(json.dumps({"fingerprint": key, "complete": bool(complete)}))
        print(f"sweeps finished after {time.perf_counter() - start:.0f} s (complete: {complete})", flush=True)
    code = aggregate.main([*[str(root / f"{p}_{args.scale}") for p in parts], "--target", args.target,
                           "--out", str(args.out)])
    print(f"{args.target}: {time.perf_counter() - start:.0f} s in all")
    return code
