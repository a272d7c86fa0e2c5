"""The paper targets' experiment configs: one file per result composed at either scale, exactly as
the former per-scale files composed, and every swept job validates."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("table2", "table3", "table4", "table4_lr", "table5", "fig2", "fig2_inv", "fig3", "fig3_b256", "fig4")
# conf/experiment/<target>_<scale>.yaml as composed before issue 9 (commit 6a23a60)
BEFORE = yaml.safe_load((REPO / "tests" / "fixtures" / "experiments_before.yaml").read_text())
PAPER_PILE8 = {("paper", t) for t in ("table3", "table4", "table4_lr", "table5", "fig3", "fig3_b256", "fig4")}


def compose(*overrides: str, hydra: bool = True):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from untrac.run import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra)


def test_one_experiment_file_per_result():
    names = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    assert names == sorted((*TARGETS, "pile8", "lds", "lds_pile8"))
    assert sorted([f"{t}_{s}" for t in TARGETS for s in ("cpu", "paper")] + ["pile8_cpu"]) == sorted(BEFORE)


@pytest.mark.parametrize("old", sorted(BEFORE))
def test_experiment_at_a_scale_composes_as_the_former_file(old):
    """``experiment=T scale=S`` = the former ``experiment=T_S``. Deliberate differences: the
    ``experiment`` key names the target without its scale; experiment files set no method keys (§5.2's
    Arnoldi n = 200, p = 100 is the method option hif_arnoldi_pile8 in the paper-scale sweeps); the
    optim node holds only its optimizer's fields; pile8 sweeps its methods before its test sets."""
    from omegaconf import OmegaConf

    target, scale = old.rsplit("_", 1)
    before = BEFORE[old]
    cfg = compose(f"experiment={target}", f"scale={scale}")
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if "/" not in k and "@" not in k}
    assert choices == {**before["choices"], "experiment": target, "scale": scale}
    sweep = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    expected_sweep = [s.replace(",hif_arnoldi,", ",hif_arnoldi_pile8,") if (scale, target) in PAPER_PILE8 else s
                      for s in before["sweep"]]
    assert (sorted(sweep) if target == "pile8" else sweep) == (
        sorted(expected_sweep) if target == "pile8" else expected_sweep)
    after = OmegaConf.to_container(cfg, resolve=False)
    del after["hydra"]
    expected = dict(before["config"], experiment=before["config"]["experiment"].rsplit("_", 1)[0])
    assert after.pop("method")["name"] == expected.pop("method")["name"]
    optim, old_optim = after.pop("optim"), expected.pop("optim")
    assert optim == {k: old_optim[k] for k in optim}
    assert after == expected


def test_paper_scale_exists_only_where_the_paper_has_the_result():
    with pytest.raises(Exception, match="scale/cpu_only/paper"):
        compose("experiment=pile8", "scale=paper")


def test_table3_at_paper_scale_is_the_papers_setup():
    cfg = compose("experiment=table3", "scale=paper")
    assert (cfg.model.name, cfg.train.steps, cfg.data.block_size, cfg.scale) == ("opt125m", 40000, 1024, "paper")
    assert "hif_arnoldi_pile8" in cfg.hydra.sweeper.params.method.split(",")
    assert compose("experiment=table3", "scale=paper", "model=opt_tiny").model.name == "opt_tiny"  # the user wins


@pytest.mark.parametrize("target,scale", [pytest.param(t, s, marks=[] if s == "cpu" else pytest.mark.slow)
                                          for t in (*TARGETS, "pile8") for s in ("cpu", "paper")
                                          if (t, s) != ("pile8", "paper")])
def test_experiment_composes_and_every_job_validates(target, scale):
    """The sweep's jobs pass the typed schema's checks (Config.__post_init__): every swept value once.
    (The paper-scale sweeps are the same grids with other sizes: checked in the slow suite.)"""
    from omegaconf import OmegaConf

    cfg = compose(f"experiment={target}", f"scale={scale}")
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    assert params, "a result is a sweep"
    first = {k: v[0] for k, v in params.items()}
    jobs = [{**first, key: value} for key, values in params.items() for value in values[1:]] + [first]
    for values in jobs:
        job = compose(f"experiment={target}", f"scale={scale}", *(f"{k}={v}" for k, v in values.items()),
                      hydra=False)
        typed = OmegaConf.to_object(job)
        assert typed.scale == scale
        assert typed.model.name in (("t5_tiny", "opt_tiny") if scale == "cpu" else ("t5xl", "opt125m"))
    for path in (REPO / "conf" / "experiment").glob("*.yaml"):
        assert not any("launcher" in line.split("#")[0] for line in path.read_text().splitlines()), \
            f"{path.name}: the launcher is a command-line choice"


def test_checkpoints_follow_the_method_plugins_and_presets():
    """The planner asks the composed job's method plugin (a preset is composed to its method)."""
    from untrac.config import typed_config
    from untrac.paper.plan import Composer, job_specs

    with Composer() as compose:
        kept = {m: any(s.checkpoints for s in job_specs(typed_config(compose([f"method={m}", "runs=1"]))))
                for m in ("tracin", "graddot", "hif_arnoldi_pile8")}
    assert kept == {"tracin": True, "graddot": False, "hif_arnoldi_pile8": False}


def test_a_bad_override_of_a_target_is_one_line(capsys):
    from untrac.paper.__main__ import main

    assert main(["lds", "--scale", "cpu", "--", "method.nosuch=3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["untrac.paper: error: Could not override 'method.nosuch'."]
