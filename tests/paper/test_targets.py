"""The paper targets' experiment configs: one file per result, composed at either scale; a target's
jobs are the product of its swept values (Hydra's own expansion), each once, and every job composes,
validates and holds the values it sweeps. What the values are (the paper's): test_paper_settings."""

from itertools import product
from math import prod
from operator import attrgetter
from pathlib import Path

import pytest

from target_jobs import SCALES, each_value_once, head, jobs, swept, typed_job

REPO = Path(__file__).resolve().parents[2]
# python -m untrac.paper TARGET → its experiment parts (each one sweep, conf/experiment/<part>.yaml)
PARTS = {"table2": ["table2"], "table3": ["table3"], "table5": ["table3"], "table4": ["table4", "table4_lr"],
         "fig2": ["fig2", "fig2_inv"], "fig3": ["fig3", "fig3_b256"], "fig4": ["fig4"], "lds": ["lds", "lds_pile8"]}
# The jobs of each part: the product of the sizes of its swept lists (the same at both scales).
JOBS = {
    "table2": 2 * 8,  # synthetic data A, B × the eight methods
    "table3": 2 * 3 * 8,  # equal, different sizes × ToxiGen, WinoBias, TruthfulQA × the eight methods
    "table5": 2 * 3 * 8,  # Table 3's jobs (make table5 reuses its sweep)
    "table4": 2 * 5,  # UnTrac, UnTrac-Inv × five optimizers
    "table4_lr": 2 * 4,  # UnTrac, UnTrac-Inv × Adam at four more learning rates
    "fig2": 2, "fig2_inv": 2,  # synthetic data A, B (one method each)
    "fig3": 2, "fig3_b256": 2,  # UnTrac, UnTrac-Inv (one batch size each)
    "fig4": 2,  # the two ground truths of App. A.1
    "pile8": 3 * 2,  # three test sets × UnTrac, UnTrac-Inv
    "lds": 2 * 10, "lds_pile8": 10,  # the eight methods and the two text-overlap baselines
}
CPU_ONLY = {"pile8"}


def test_the_targets_are_the_planners_and_their_parts_the_experiment_files():
    from untrac.paper.targets import PARTS as planned

    assert planned == PARTS
    names = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    assert names == sorted(JOBS) == sorted({p for parts in PARTS.values() for p in parts} | {"table5"} | CPU_ONLY)


def test_paper_scale_exists_only_where_the_paper_has_the_result(compose):
    with pytest.raises(Exception, match="scale/cpu_only/paper"):
        compose("experiment=pile8", "scale=paper")


def test_table3_at_paper_scale_is_the_papers_setup(compose):
    cfg = compose("experiment=table3", "scale=paper", hydra=True)
    assert (cfg.model.name, cfg.train.steps, cfg.data.block_size, cfg.scale) == ("opt125m", 40000, 1024, "paper")
    assert "hif_arnoldi_pile8" in cfg.hydra.sweeper.params.method.split(",")
    assert compose("experiment=table3", "scale=paper", "model=opt_tiny").model.name == "opt_tiny"  # the user wins


PARTS_AT = [(p, s) for p in sorted(JOBS) for s in SCALES if (p, s) != ("pile8", "paper")]


@pytest.mark.parametrize("part,scale", PARTS_AT)
def test_a_targets_jobs_are_the_product_of_its_swept_values(part, scale):
    """Hydra's expansion of the part's sweep: every combination of the swept values, each once."""
    params = swept(head(part, scale))
    assert params, "a result is a sweep"
    expanded = jobs(part, scale)
    assert len(expanded) == prod(len(values) for values in params.values()) == JOBS[part]
    combinations = sorted(tuple(_value(job[key]) for key in params) for job in expanded)
    assert combinations == sorted(product(*([_value(v) for v in values] for values in params.values())))
    assert all((job["experiment"], job["scale"]) == (part, scale) for job in expanded)


def _value(text: str):
    """A swept value as a number where it is one (Hydra writes the YAML's ``1e-4`` as ``0.0001``)."""
    try:
        return float(text)
    except ValueError:
        return text


def _holds(cfg, job: dict[str, str]) -> None:
    """The typed job holds the values it sweeps: a group option by its name (a method preset by the
    method it composes), any other key by value. (``experiment`` names the result, e.g. table4 for
    its part table4_lr.)"""
    for key, value in job.items():
        if key == "experiment":
            named = value == cfg.experiment or value.startswith(cfg.experiment + "_")  # table4_lr → table4
            assert named or (value, cfg.experiment) == ("table5", "table3"), (value, cfg.experiment)
        elif key == "scale":
            assert cfg.scale == value
        elif key in ("method", "optim", "data", "testset"):
            assert getattr(cfg, key).name == value.removesuffix("_pile8"), (key, value)
        else:
            held = attrgetter(key)(cfg)
            assert _value(str(held)) == _value(value), (key, value, held)


@pytest.mark.parametrize("part,scale", PARTS_AT)
def test_each_swept_value_composes_and_validates(part, scale):
    """The first job, and one job per other swept value, pass the typed schema's checks; each holds
    the values it sweeps. (Every job: the slow test below.)"""
    for job in each_value_once(part, scale):
        _holds(typed_job(job), job)
    for path in (REPO / "conf" / "experiment").glob("*.yaml"):
        assert not any("launcher" in line.split("#")[0] for line in path.read_text().splitlines()), \
            f"{path.name}: the launcher is a command-line choice"


@pytest.mark.slow
@pytest.mark.parametrize("target,scale", [(t, s) for t in PARTS for s in SCALES])
def test_every_job_of_every_target_composes_validates_and_holds_its_values(target, scale):
    for part in PARTS[target]:
        for job in jobs(part, scale):
            _holds(typed_job(job), job)


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
