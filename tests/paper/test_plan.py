"""The planner and the model store: the union of a target's models, keyed as the pipeline looks them up."""

import pytest

import untrac.store
from untrac.config import Config, DataConfig, MethodConfig, ModelConfig, TrainConfig
from untrac.groundtruth import truth_seeds
from untrac.paper import plan
from untrac.pipeline import Experiment, run_experiment
from untrac.store import needed_specs

TINY = dict(model=ModelConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32),
            data=DataConfig(n_per_dataset=8), train=TrainConfig(steps=2, batch_size=4, checkpoint_every=1))


@pytest.fixture(scope="module")
def table2():
    return plan.plan_parts(["table2"], "cpu", ["cache_dir=/nonexistent/cache"])


def test_table2_needs_theta0_with_checkpoints_and_four_leave_outs_per_run_seed_and_data(table2):
    """16 jobs (2 data × 8 methods), 3 runs, 5 ground-truth seeds per run (cpu scale): per run, seed
    and data θ0 once and 4 θ−Z, each once; TracIn's checkpoints only on each run's scored θ0 (its
    first seed), though 7 of the 8 methods ask for it without."""
    assert len(table2) == 2 * 3 * 5 * (1 + 4)
    theta0 = [p.spec for p in table2 if p.spec.exclude is None]
    assert len(theta0) == 2 * 3 * 5 and len({s.seed for s in theta0}) == 3 * 5
    assert sorted(s.seed for s in theta0 if s.checkpoints) == sorted(2 * [0, 1, 2])
    assert len({p.spec.key() for p in table2}) == len(table2)
    assert {p.spec.data.variant for p in table2} == {"A", "B"}


def test_the_plans_keys_are_the_pipelines_lookups(table2, tmp_path):
    with plan.Composer() as compose:
        cfg = plan.job_configs(compose, "table2", "cpu", ["data=synthA", "method=tracin"])[0]
    cfg.cache_dir = str(tmp_path)
    exp = Experiment(cfg)
    looked_up = {exp.spec(seed, z, checkpoints=z is None and k == 0).key()
                 for run in range(cfg.runs) for k, seed in enumerate(truth_seeds(cfg, run))
                 for z in [None, *exp.task.train]}
    assert looked_up == {p.spec.key() for p in table2 if p.spec.data.variant == "A"}


def test_a_model_the_store_trained_is_found_by_the_run_without_training(tmp_path, monkeypatch):
    """Each entry goes through the plan file (as a train-models job reads it); then the scoring run
    (TracIn: θ0 with its checkpoints, and every θ−Z) trains nothing."""
    cfg = Config(**TINY, method=MethodConfig(name="tracin"), cache_dir=str(tmp_path / "cache"))
    planned = [plan.Planned(s, cfg.cache_dir, cfg.device, cfg.threads)
               for s in needed_specs(cfg, ["dataset1", "dataset2", "dataset3", "dataset4"], checkpoints=True)]
    plan.write_plan(planned, tmp_path / "models.json")
    assert [plan.train_entry(tmp_path / "models.json", i).endswith("trained") for i in range(5)] == [True] * 5
    assert plan.train_entry(tmp_path / "models.json", 0).endswith("already cached")
    monkeypatch.setattr(untrac.store, "train", lambda *a, **k: pytest.fail("the scoring run trained a model"))
    results = run_experiment(cfg)
    assert len(results.truth) == 4 and results.cache_hits["models"] == 5


@pytest.mark.slow  # 3-5 s
def test_the_lds_target_plans_the_banks_models():
    """groundtruth.mode=subsets: every θ−S of the bank (|S| ≥ 2, not all) is in the union."""
    from untrac.data.prepare import dataset_names
    from untrac.groundtruth import trained_models

    with plan.Composer() as compose:
        cfg = plan.job_configs(compose, "lds", "cpu", [])[0]
    planned = plan.plan_parts(["lds"], "cpu", [])
    bank = {p.spec.exclude for p in planned if isinstance(p.spec.exclude, tuple)}
    assert cfg.groundtruth.mode == "subsets" and bank
    assert bank == {m for m in trained_models(dataset_names(cfg.data), cfg) if isinstance(m, tuple)}


def test_compose_run_is_the_runs_typed_config_and_hydras_errors_are_one_untrac_line():
    """What scripts compose with; a Hydra error (here an unknown key) is one UntracError line, no hint."""
    from untrac.errors import UntracError

    cfg = plan.compose_run(["method=graddot", "seed=3"])
    assert isinstance(cfg, Config) and (cfg.method.name, cfg.seed) == ("graddot", 3)
    with pytest.raises(UntracError) as err:
        plan.compose_run(["method=graddot", "method.nosuch=3"])
    assert str(err.value) == "Could not override 'method.nosuch'."


def test_the_planner_pretrains_a_stand_in_once_before_its_jobs_and_they_start_from_it(tmp_path, monkeypatch):
    """model.pretrain: ``pretrain_first`` builds the stand-in in the planner's process; the plan file
    carries the recipe (read back as a PretrainConfig), and a train-models job finds it, pretraining nothing."""
    from untrac.pretrain_config import PretrainConfig

    standin = ModelConfig(name="t5_standin", tokenizer="standin", d_model=16, num_layers=1, num_heads=2, d_ff=32,
                          pretrain=PretrainConfig(steps=10, pairs=300, batch_size=8, warmup=2))
    cfg = Config(**{**TINY, "model": standin}, method=MethodConfig(name="graddot"), cache_dir=str(tmp_path / "cache"))
    planned = [plan.Planned(s, cfg.cache_dir, cfg.device, cfg.threads)
               for s in needed_specs(cfg, ["dataset1", "dataset2", "dataset3", "dataset4"], checkpoints=False)]
    lines = plan.pretrain_first(planned)
    assert len(lines) == 1 and lines[0].startswith("stand-in t5_standin: pretrained in")
    assert plan.pretrain_first(planned)[0].startswith("stand-in t5_standin: cached")
    plan.write_plan(planned, tmp_path / "models.json")
    spec = plan.read_entry(tmp_path / "models.json", 0)[0]
    assert spec.model == standin and spec.key() == planned[0].spec.key()
    monkeypatch.setattr("untrac.pretrain.pretrain", lambda *a: pytest.fail("a job pretrained the stand-in again"))
    assert plan.train_entry(tmp_path / "models.json", 0).endswith("trained")
