"""Stage wiring without Hydra: what the cache keys depend on, and the ground-truth sign."""

import pandas as pd
import pytest

from untrac.cache import make_key
from untrac.config import (Config, DataConfig, GroundTruthConfig, MethodConfig, ModelConfig, OptimConfig,
                           TrainConfig, UnlearnConfig)
from untrac.pipeline import Experiment, run_experiment

TINY = dict(model=ModelConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32),
            data=DataConfig(n_per_dataset=8), train=TrainConfig(steps=4, batch_size=4),
            unlearn=UnlearnConfig(batch_size=4, epochs=1, eval_every=1, eval_batch_size=8))


@pytest.fixture
def experiment(tmp_path):
    return Experiment(Config(**TINY, cache_dir=str(tmp_path)))


def test_model_keys_ignore_what_does_not_change_the_model(experiment):
    base = make_key(experiment.model_fields(seed=0, exclude=None))
    experiment.cfg.method = MethodConfig(name="graddot")
    experiment.cfg.optim = OptimConfig(lr=1e-3)
    experiment.cfg.unlearn = UnlearnConfig(batch_size=2)
    assert make_key(experiment.model_fields(0, None)) == base  # scoring knobs: θ0 shared by all methods
    assert make_key(experiment.model_fields(1, None)) != base
    assert make_key(experiment.model_fields(0, "dataset1")) != base
    experiment.cfg.train = TrainConfig(steps=5, batch_size=4)
    assert make_key(experiment.model_fields(0, None)) != base
    experiment.cfg.groundtruth = GroundTruthConfig(mode="all_examples")
    fields = experiment.model_fields(0, None)
    assert fields["train"]["steps"] is None and fields["train"]["epochs"] == 1


def test_runs_vary_seed_retrains_but_sample_only_resamples(tmp_path):
    by_seed = run_experiment(Config(**TINY, runs=2, cache_dir=str(tmp_path / "a")))
    truths = by_seed.truth.pivot(index=["train_dataset", "test_subset"], columns="run", values="influence")
    assert not truths[0].equals(truths[1])
    cfg = Config(**TINY, runs=2, cache_dir=str(tmp_path / "b"))
    cfg.data.runs_vary = "sample"
    by_sample = run_experiment(cfg)
    truths = by_sample.truth.pivot(index=["train_dataset", "test_subset"], columns="run", values="influence")
    pd.testing.assert_series_equal(truths[0], truths[1], check_names=False)
    assert set(by_sample.influence.method) == {"untrac"}
