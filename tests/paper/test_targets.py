"""The paper targets' experiment configs: one per result and scale, and every swept job validates."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")
                     if p.stem.split("_")[0] in ("table2", "table3", "table4", "table5", "fig2", "fig3", "fig4"))


def test_every_result_has_a_cpu_and_a_paper_config():
    for name in ("table2", "table3", "table4", "table5", "fig2", "fig3", "fig4"):
        for scale in ("cpu", "paper"):
            assert f"{name}_{scale}" in EXPERIMENTS


@pytest.mark.parametrize("experiment", [pytest.param(e, marks=[] if e.endswith("_cpu") else pytest.mark.slow)
                                        for e in EXPERIMENTS])
def test_experiment_composes_and_every_job_validates(experiment):
    """The sweep's jobs pass the typed schema's checks (Config.__post_init__): every swept value once.
    (The paper-scale sweeps are the same grids with other sizes: checked in the slow suite.)"""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from untrac.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
        params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
        assert params, "a result is a sweep"
        scale = experiment.rsplit("_", 1)[1]
        first = {k: v[0] for k, v in params.items()}
        jobs = [{**first, key: value} for key, values in params.items() for value in values[1:]] + [first]
        for values in jobs:
            job = compose("config", overrides=[f"experiment={experiment}", *(f"{k}={v}" for k, v in values.items())])
            typed = OmegaConf.to_object(job)
            assert typed.scale == scale
            assert typed.model.name in (("t5_tiny", "opt_tiny") if scale == "cpu" else ("t5xl", "opt125m"))
    text = (REPO / "conf" / "experiment" / f"{experiment}.yaml").read_text()
    assert not any("launcher" in line.split("#")[0] for line in text.splitlines()), "launcher: command line only"


def test_checkpoints_follow_the_method_plugins_and_presets():
    from untrac.paper.targets import _needs_checkpoints

    assert _needs_checkpoints("tracin") and not _needs_checkpoints("graddot")
    assert not _needs_checkpoints("hif_arnoldi_pile8")  # a preset: followed to hif_arnoldi
