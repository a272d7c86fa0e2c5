"""The leave-dataset-out ground truth over S seeds: Eq. 1, the seed scheme, the mean and SE, the cache."""

import copy

import datasets
import numpy as np
import pandas as pd
import pytest

from untrac.config import Config, DataConfig, GroundTruthConfig, ModelConfig, TrainConfig, UnlearnConfig
from untrac.errors import UntracError
from untrac.groundtruth import mean_over_seeds, truth_seeds
from untrac.losses import dataset_loss
from untrac.models import build_model
from untrac.optim import training_optimizer
from untrac.pipeline import Experiment, run_experiment
from untrac.train import TrainRun, train

TINY = dict(model=ModelConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32),
            data=DataConfig(n_per_dataset=8), train=TrainConfig(steps=4, batch_size=4),
            unlearn=UnlearnConfig(batch_size=4, epochs=1, eval_every=1, eval_batch_size=8))
DATASETS = {"dataset1", "dataset2", "dataset3", "dataset4"}


def tiny(tmp_path, seeds: int = 1, **kw) -> Config:
    # Copies: a test that sets cfg.data.runs_vary must not change TINY's DataConfig for the next one.
    return Config(**copy.deepcopy(TINY), groundtruth=GroundTruthConfig(seeds=seeds), cache_dir=str(tmp_path), **kw)


def test_seed_scheme_is_distinct_deterministic_and_run_based():
    assert truth_seeds(Config(), 0) == [0]  # shipped default: one seed, the run's θ0 seed as before
    cfg = Config(seed=5, runs=4, groundtruth=GroundTruthConfig(seeds=3))
    by_run = [truth_seeds(cfg, r) for r in range(4)]
    assert by_run[0] == [5, 1005, 2005] and by_run[3] == [8, 1008, 2008]
    assert len({s for seeds in by_run for s in seeds}) == 12  # no seed shared by two runs
    assert by_run == [truth_seeds(cfg, r) for r in range(4)]
    cfg.data.runs_vary = "sample"  # one ground truth shared by every run
    assert {tuple(truth_seeds(cfg, r)) for r in range(4)} == {(5, 1005, 2005)}


def test_seeds_must_be_positive_and_runs_must_not_overlap():
    with pytest.raises(UntracError, match=r"^groundtruth\.seeds must be > 0, got 0$"):
        GroundTruthConfig(seeds=0)
    with pytest.raises(UntracError, match="runs=1001"):
        Config(runs=1001, groundtruth=GroundTruthConfig(seeds=2))


def test_ground_truth_is_loss_after_removal_minus_before(tmp_path):
    exp = Experiment(tiny(tmp_path))
    theta0 = exp.trained(seed=0)
    truth = exp.truth.per_seed(0, theta0)
    base = exp.test_losses(theta0)
    loo = exp.test_losses(exp.trained(0, exclude="dataset2"))
    row = truth[(truth.train_dataset == "dataset2") & (truth.test_subset == "test")]
    assert row.influence.item() == pytest.approx(loo["test"] - base["test"])
    assert set(truth.train_dataset) == DATASETS and set(truth.seed) == {0}


def _hand_losses(exp: Experiment, seed: int, exclude: str | None) -> float:
    """L(test, θ) of a model trained here from scratch, outside the pipeline and its cache."""
    cfg = exp.cfg
    pool = datasets.concatenate_datasets([ds for z, ds in exp.task.train.items() if z != exclude])
    model, _ = build_model(cfg.model, exp.tokenizer, seed)
    optimizer = training_optimizer(model.parameters(), cfg.train.optim, cfg.train.lr, cfg.train.weight_decay)
    train(model, exp.arch, pool, optimizer, exp.device, TrainRun(cfg.train.steps, cfg.train.batch_size, seed))
    return dataset_loss(model, exp.task.test["test"], exp.arch, exp.device)


def test_mean_and_se_over_seeds_equal_independently_trained_models(tmp_path):
    exp = Experiment(tiny(tmp_path, seeds=3, runs=2))
    per_seed = exp.truth.per_seed(run=1)
    assert sorted(per_seed.seed.unique()) == [1, 1001, 2001]
    truth = mean_over_seeds(per_seed)
    full = {s: _hand_losses(exp, s, None) for s in (1, 1001, 2001)}
    for z in ["dataset1", "dataset4"]:
        per = [_hand_losses(exp, s, z) - full[s] for s in (1, 1001, 2001)]
        row = truth[(truth.train_dataset == z) & (truth.test_subset == "test")].iloc[0]
        assert row.influence == pytest.approx(np.mean(per), abs=1e-6)
        assert row.se == pytest.approx(np.std(per, ddof=1) / np.sqrt(3), abs=1e-6)
        assert (row.run, row.seeds) == (1, 3)
    assert len({round(v, 9) for v in per}) == 3  # the seeds really differ


def test_seeds_are_cached_and_evaluated_once(tmp_path):
    first = Experiment(tiny(tmp_path, seeds=2))
    reference = first.truth.per_seed(0)
    assert first.results.counters["groundtruth_evaluations"] == 10  # 2 seeds × (θ0 + four θ−Z)
    again = first.truth.per_seed(0)  # in memory: nothing loaded or evaluated again
    assert first.results.counters["groundtruth_evaluations"] == 10
    pd.testing.assert_frame_equal(reference, again)

    second = Experiment(tiny(tmp_path, seeds=2))  # a new process: every model comes from the cache
    resumed = second.truth.per_seed(0)
    assert second.results.cache_hits["models"] == 10 and "train" not in second.results.seconds
    pd.testing.assert_frame_equal(reference, resumed)


def test_run_experiment_columns_and_sharing_across_runs(tmp_path):
    shared_cfg = tiny(tmp_path, seeds=2, runs=2)
    shared_cfg.data.runs_vary = "sample"
    shared = run_experiment(shared_cfg)
    assert list(shared.truth.columns[:4]) == ["run", "train_dataset", "test_subset", "influence"]
    assert {"se", "seeds"} <= set(shared.truth.columns)
    assert shared.counters["groundtruth_evaluations"] == 10  # run 1 reuses run 0's loss tables
    assert set(shared.truth_seeds.seed) == {0, 1000}
    runs = shared.truth.pivot(index=["train_dataset", "test_subset"], columns="run", values="influence")
    pd.testing.assert_series_equal(runs[0], runs[1], check_names=False)
    assert (shared.truth.seeds == 2).all() and shared.truth.se.notna().all()

    retrained = run_experiment(tiny(tmp_path, seeds=2, runs=2))
    seeds = retrained.truth_seeds.groupby("run").seed.unique()
    assert list(seeds[0]) == [0, 1000] and list(seeds[1]) == [1, 1001]
    assert retrained.cache_hits["models"] >= 10  # run 0's seeds were trained for the shared run above
