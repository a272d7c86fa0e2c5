"""Run one of the paper's results end to end: ``make table2`` … ``make fig4`` call this.

    python -m untrac.paper TARGET [--scale cpu|paper] [--launcher auto|basic|joblib|submitit_local|submitit_slurm]
                                  [--out outputs] [--fresh] [-- extra overrides ...]

1. **prefill**: every model the sweeps need (θ0 and each θ−Z of every run and data setting) is
   one job of ``python -m untrac.paper prefill`` — independent jobs that fill the shared cache, so
   a parallel launcher or a cluster trains them at once;
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
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from untrac.paper import REPO

# target → the experiment parts it runs (each `experiment=<part> scale=<scale>` is one sweep)
PARTS = {"table2": ["table2"], "table3": ["table3"], "table5": ["table3"], "table4": ["table4", "table4_lr"],
         "fig2": ["fig2", "fig2_inv"], "fig3": ["fig3", "fig3_b256"], "fig4": ["fig4"], "lds": ["lds", "lds_pile8"]}
# swept keys that change which models are trained; every other swept key is pinned in the prefill
MODEL_KEYS = ("data", "model", "train", "groundtruth", "seed", "runs")
LAUNCHER_ARGS = {  # job limits for the submitit launchers, per scale (minutes)
    "submitit_local": {"cpu": ["hydra.launcher.timeout_min=120"], "paper": ["hydra.launcher.timeout_min=4320"]},
    "submitit_slurm": {"cpu": ["hydra.launcher.timeout_min=120", "hydra.launcher.cpus_per_task=1"],
                       "paper": ["hydra.launcher.timeout_min=4320", "hydra.launcher.cpus_per_task=8",
                                 "hydra.launcher.gpus_per_node=1", "hydra.launcher.mem_gb=64"]},
}


def compose(experiment: str, scale: str, extra: list[str]):
    """The experiment's config at ``scale`` with its hydra node (sweeper params), as ``untrac.run`` sees it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from untrac.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    plain = [o for o in extra if not _is_sweep(o) and not o.startswith("hydra")]
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return hydra_compose("config", overrides=[f"experiment={experiment}", f"scale={scale}", *plain],
                             return_hydra_config=True)


def _is_sweep(override: str) -> bool:
    value = override.partition("=")[2]
    return "," in value and not value.startswith("[") or value.startswith(("range(", "choice(", "glob("))


def _values(key: str, spec: str) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(f"{key}={spec}")
    return list(parsed.sweep_string_iterator()) if parsed.is_sweep_override() else [parsed.get_value_element_as_str()]


def prefill_overrides(cfg, extra: list[str]) -> list[str]:
    """Prefill sweep of one part: model-determining swept keys kept, the rest pinned to one value."""
    params = dict(cfg.hydra.sweeper.params or {})
    params.update({k: v for k, v in (o.split("=", 1) for o in extra if "=" in o and _is_sweep(o))})
    pinned, methods = [], {cfg.method.name}
    for key, spec in params.items():
        values = _values(key, str(spec))
        if key == "method":
            methods = set(values)
        if key.lstrip("+").split(".")[0] in MODEL_KEYS:
            pinned.append(f"{key}={','.join(values)}")
        else:
            pinned.append(f"{key}={values[0]}")
    from untrac.groundtruth import trained_models

    datasets = 4 if cfg.data.kind == "synthetic" else len(cfg.data.custom_sizes) if cfg.data.sizes == "custom" else 8
    runs = cfg.runs if cfg.data.runs_vary == "seed" else 1
    models = len(trained_models([f"d{i}" for i in range(datasets)], cfg))  # the count depends on K alone
    return [*pinned, f"prefill.run=range(0,{runs})", f"prefill.model=range(0,{models})",
            f"prefill.checkpoints={str(any(_needs_checkpoints(m) for m in methods)).lower()}"]


def _needs_checkpoints(option: str) -> bool:
    """Whether ``method=<option>`` trains θ0 with checkpoints (its plugin's ``Needs``); a preset
    (conf/method/hif_arnoldi_pile8.yaml) is followed to the method its defaults extend."""
    import yaml

    from untrac.methods import registry

    while option not in registry():
        defaults = yaml.safe_load((REPO / "conf" / "method" / f"{option}.yaml").read_text())["defaults"]
        option = next(d for d in defaults if d != "_self_").split("@")[0].rsplit("/", 1)[-1]
    return registry()[option].needs.checkpoints


def models_signature(cfg, spec: list[str]) -> str:
    """What determines the models a prefill trains: the model-related config and the swept model keys."""
    from omegaconf import OmegaConf

    fixed = {k: OmegaConf.to_container(cfg[k]) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in MODEL_KEYS}
    swept = [o for o in spec if o.split("=")[0].lstrip("+").split(".")[0] in (*MODEL_KEYS, "prefill")]
    return json.dumps([fixed, swept], sort_keys=True, default=str)


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
    try:
        import hydra_plugins.hydra_joblib_launcher  # noqa: F401  (installed by `make install`)
    except ImportError:
        return "basic"
    return "joblib" if scale == "cpu" else "basic"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m untrac.paper", description=__doc__.split("\n\n")[0],
        epilog="Also: `python -m untrac.paper aggregate SWEEP...` (tables from finished sweeps) and "
               "`python -m untrac.paper prefill -m OVERRIDES...` (train a sweep's models into the cache).")
    parser.add_argument("target", choices=sorted(PARTS))
    parser.add_argument("--scale", default="cpu", choices=["cpu", "paper"])
    parser.add_argument("--launcher", default="auto",
                        help="auto (joblib at cpu scale, basic at paper scale), basic, joblib, submitit_local, "
                             "submitit_slurm")
    parser.add_argument("--out", type=Path, default=Path("outputs"))
    parser.add_argument("--fresh", action="store_true", help="never reuse a finished sweep")
    return parser


def sweep_all(parts: list[str], scale: str, extra: list[str], launch: list[str], root: Path) -> bool:
    """Prefill the models of every part (once per distinct model set), then run each part's sweep
    under ``root``; whether every command succeeded."""
    py, start, complete, done = sys.executable, time.perf_counter(), True, []
    for part in parts:
        cfg = compose(part, scale, extra)
        spec = prefill_overrides(cfg, extra)
        if models_signature(cfg, spec) in done:  # e.g. table4's two halves share their models
            continue
        done.append(models_signature(cfg, spec))
        command = [py, "-m", "untrac.paper", "prefill", "-m", f"experiment={part}", f"scale={scale}", *spec,
                   *launch, *[o for o in extra if not _is_sweep(o)], f"hydra.sweep.dir={root / 'prefill' / part}"]
        complete &= run(command, root / f"prefill_{part}_{scale}.log") == 0
    print(f"models ready after {time.perf_counter() - start:.0f} s", flush=True)
    for part in parts:
        command = [py, "-m", "untrac.run", "-m", f"experiment={part}", f"scale={scale}", *launch, *extra,
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
