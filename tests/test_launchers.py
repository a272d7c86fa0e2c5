"""Parallel and distributed runs: launcher configs, the model plan, and a real submitit_local sweep."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from untrac.paper import plan, targets
from untrac.record import CORRELATIONS, INFLUENCE

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.n_per_dataset=8", "train.steps=4", "train.batch_size=4", "train.checkpoint_every=2", "runs=1",
        "threads=1"]


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from untrac.run import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local", "submitit_slurm"])
def test_each_launcher_composes_with_the_targets_settings(launcher):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    extra = targets.LAUNCHER_ARGS.get(launcher, {}).get("paper", [])
    cfg = _compose(["experiment=table3", "scale=paper", f"hydra/launcher={launcher}", *extra])
    target = cfg.hydra.launcher._target_
    assert {"basic": "BasicLauncher", "joblib": "JoblibLauncher", "submitit_local": "LocalLauncher",
            "submitit_slurm": "SlurmLauncher"}[launcher] in target
    if launcher == "submitit_slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min == 4320


@pytest.mark.slow  # 3-5 s
def test_the_plan_trains_what_the_jobs_look_up_once():
    """table4_lr: pile8 trains θ0 and the ground truth once (runs differ in the scored sample), one
    data setting, its optimizer sweep trains nothing: 1 + 8 models for each of the 4 ground-truth
    seeds (groundtruth.seeds at cpu scale); a seed swept on the command line doubles them."""
    planned = plan.plan_parts(["table4_lr"], "cpu", [])
    assert len(planned) == 4 * 9 and len({p.spec.seed for p in planned}) == 4
    assert len(plan.plan_parts(["table4_lr"], "cpu", ["seed=0,1"])) == 2 * 4 * 9


def test_make_help_lists_the_paper_targets():
    text = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for target in ("table2", "table3", "table4", "table5", "fig2", "fig3", "fig4"):
        assert f"  {target} " in text


def _run(args, tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_submitit_local_train_models_fills_the_cache_and_the_scoring_sweep_reuses_it(tmp_path):
    """Models are trained by independent submitit jobs at once; the scoring jobs only read them."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from untrac.config import typed_config

    cache, models, sweep = tmp_path / "cache", tmp_path / "train-models", tmp_path / "sweep"
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20"]
    common = [*launcher, *TINY, f"cache_dir={cache}"]
    with plan.Composer() as compose:
        cfg = typed_config(compose(["method=tracin", *TINY, f"cache_dir={cache}"]))
    planned = [plan.Planned(s, cfg.cache_dir, cfg.device, cfg.threads) for s in plan.job_specs(cfg)]
    plan.write_plan(planned, tmp_path / "models.json")
    _run(["-m", "untrac.paper", "train-models", "-m", f"plan.file={tmp_path / 'models.json'}",
          "plan.index=range(0,5)", *launcher, f"hydra.sweep.dir={models}"], tmp_path)
    done = sorted((models / str(i) / "DONE").read_text() for i in range(5))
    assert all("trained" in line for line in done) and any(line.startswith("θ0") for line in done)
    assert len(list((cache / "models").glob("*/manifest.json"))) == 5

    _run(["-m", "untrac.run", "-m", "method=tracin,untrac", *common, f"hydra.sweep.dir={sweep}"], tmp_path)
    for num in (0, 1):
        job = sweep / str(num)
        assert (job / INFLUENCE.file).is_file() and (job / CORRELATIONS.file).is_file()
        log = (job / "run.log").read_text()
        assert "reused from cache" in log and "not in cache" not in log
    assert len(list((cache / "models").glob("*/manifest.json"))) == 5  # nothing retrained


@pytest.mark.slow
def test_a_paper_target_runs_end_to_end_with_the_basic_launcher(tmp_path, capsys):
    """`make fig2` in miniature: the planned models, the two sweeps, then the figure and its table."""
    out = tmp_path / "out"
    # basic, not the cpu default (joblib): joblib's worker start-up costs ~80 s more for these tiny jobs.
    # The cpu default model, the pretrained stand-in, with a 2-step pretraining: the planner builds it first.
    standin = ["model.pretrain.steps=2", "model.pretrain.warmup=1", "model.pretrain.pairs=64",
               "model.pretrain.batch_size=8", "model.pretrain.held_out=0"]
    code = targets.main(["fig2", "--out", str(out), "--launcher", "basic", "--", *TINY, *standin,
                               f"cache_dir={tmp_path / 'cache'}"])
    assert code == 0, capsys.readouterr()
    assert (out / "figures" / "fig2.png").stat().st_size > 10_000
    md = (out / "tables" / "fig2.md").read_text()
    assert "4 ok" in md and "untrac_inv" in md
    root = next((out / "sweeps" / "fig2_cpu").iterdir())
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["fig2_cpu", "fig2_inv_cpu", "train-models"]
    assert (root / "meta.json").read_text().endswith('"complete": true}')
    assert len(list((tmp_path / "cache" / "pretrained").glob("*/model.safetensors"))) == 1  # one stand-in, built once


def test_auto_launcher_is_parallel_on_a_cpu_and_sequential_on_one_gpu():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    assert targets.resolve_launcher("auto", "cpu") == "joblib"
    assert targets.resolve_launcher("auto", "paper") == "basic"
    assert targets.resolve_launcher("submitit_slurm", "cpu") == "submitit_slurm"
