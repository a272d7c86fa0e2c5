"""Stage wiring without Hydra: what the cache keys depend on, and the ground-truth sign."""

import numpy as np
import pandas as pd
import pytest
import torch

from untrac.cache import make_key
from untrac.config import (Config, DataConfig, GroundTruthConfig, MethodConfig, ModelConfig, OptimConfig,
                           RankConfig, TrainConfig, UnlearnConfig)
import untrac.methods
import untrac.models
from untrac.methods import Method, Needs, PoolConfig, final_rows, register, registry
from untrac.errors import UntracError
from untrac.pipeline import Experiment, run_experiment

TINY = dict(model=ModelConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32),
            data=DataConfig(n_per_dataset=8), train=TrainConfig(steps=4, batch_size=4),
            unlearn=UnlearnConfig(batch_size=4, epochs=1, eval_every=1, eval_batch_size=8))


@pytest.fixture
def experiment(tmp_path):
    return Experiment(Config(**TINY, cache_dir=str(tmp_path)))


def test_model_keys_ignore_what_does_not_change_the_model(experiment):
    base = experiment.spec(seed=0, exclude=None).key()
    experiment.cfg.method = MethodConfig(name="graddot")
    experiment.cfg.optim = OptimConfig(lr=1e-3)
    experiment.cfg.unlearn = UnlearnConfig(batch_size=2)
    assert experiment.spec(0, None).key() == base  # scoring knobs: θ0 shared by all methods
    assert experiment.spec(1, None).key() != base
    assert experiment.spec(0, "dataset1").key() != base
    experiment.cfg.train = TrainConfig(steps=5, batch_size=4)
    assert experiment.spec(0, None).key() != base
    experiment.cfg.train = TrainConfig(steps=5, batch_size=4, clip_grad=1.0)
    assert experiment.spec(0, None).fields()["train"]["clip_grad"] == 1.0
    clipped = experiment.spec(0, None).key()
    experiment.cfg.train = TrainConfig(steps=5, batch_size=4)
    assert "clip_grad" not in experiment.spec(0, None).fields()["train"]  # unclipped models keep their keys
    assert experiment.spec(0, None).key() != clipped
    experiment.cfg.groundtruth = GroundTruthConfig(mode="all_examples")
    fields = experiment.spec(0, None).fields()
    assert fields["train"]["steps"] is None and fields["train"]["epochs"] == 1


def test_model_keys_are_those_cached_before_the_store():
    """The store must find every model trained before it: these keys were computed on main 9eeee41
    (before untrac.store) with ``make_key(Experiment(Config(cache_dir=...)).model_fields(seed, exclude))``
    and, for checkpoints, ``{**fields, "checkpoint_every": 128}``, for the default Config."""
    from untrac.store import model_spec

    cfg = Config()
    assert model_spec(cfg, 0).key() == "e45a70dd768e85e3"
    assert model_spec(cfg, 0, "dataset1").key() == "0eb8bccc570b12c2"
    assert make_key(model_spec(cfg, 0).checkpoint_fields()) == "8af45e5987cf0a44"
    bank = Config(groundtruth=GroundTruthConfig(mode="subsets"))
    assert model_spec(bank, 0).key() == "e45a70dd768e85e3"  # subsets shares fixed_steps' θ0
    assert model_spec(bank, 0, ("dataset1", "dataset3")).key() == "22a00f946e02fe6a"
    clipped = Config(groundtruth=GroundTruthConfig(mode="all_examples"), train=TrainConfig(clip_grad=1.0))
    assert model_spec(clipped, 7, "dataset2").key() == "bf3a1363326392c1"


def _hand_loss(model, test) -> float:
    """Mean over test examples of the model's own token-mean NLL, one example at a time (no padding)."""
    with torch.no_grad():
        return float(np.mean([model(input_ids=torch.tensor([ex["input_ids"]]),
                                    labels=torch.tensor([ex["labels"]])).loss.item() for ex in test]))


def test_ground_truth_is_loss_after_removal_minus_before(experiment, monkeypatch):
    import untrac.pipeline
    import untrac.store

    pools = {}
    real_train = untrac.store.train

    def recording_train(model, arch, pool, optimizer, device, run):
        pools[run.desc] = ([tuple(ids) for ids in pool["input_ids"]], run.steps)
        return real_train(model, arch, pool, optimizer, device, run)

    monkeypatch.setattr(untrac.store, "train", recording_train)
    theta0 = experiment.trained(seed=0)
    truth = experiment.truth.per_seed(0, theta0)
    rows = {z: [tuple(ids) for ids in ds["input_ids"]] for z, ds in experiment.task.train.items()}
    assert set(pools) == {"train θ0", *(f"train θ−{z}" for z in rows)}
    assert sorted(pools["train θ0"][0]) == sorted(sum(rows.values(), []))
    for z in rows:  # θ−Z saw every other dataset's examples and none of Z's, for the same T steps
        pool, steps = pools[f"train θ−{z}"]
        assert sorted(pool) == sorted(sum((r for name, r in rows.items() if name != z), []))
        assert not set(rows[z]) & set(pool) and steps == experiment.cfg.train.steps
    test = experiment.task.test["test"]
    expected = _hand_loss(experiment.trained(0, exclude="dataset2").cpu(), test) - _hand_loss(theta0.cpu(), test)
    row = truth[(truth.train_dataset == "dataset2") & (truth.test_subset == "test")]
    assert row.influence.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert expected != 0
    assert set(truth.train_dataset) == set(rows)


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


def test_groundtruth_none_trains_only_theta0_and_shares_its_key(tmp_path, monkeypatch):
    import untrac.pipeline
    import untrac.store

    trained = []
    real_train = untrac.store.train

    def recording_train(model, arch, pool, optimizer, device, run):
        trained.append(run.desc)
        return real_train(model, arch, pool, optimizer, device, run)

    monkeypatch.setattr(untrac.store, "train", recording_train)
    cfg = Config(**{**TINY, "method": MethodConfig(name="graddot")}, cache_dir=str(tmp_path),
                 groundtruth=GroundTruthConfig(mode="none"), rank=RankConfig(top_k=3))
    results = run_experiment(cfg)
    assert trained == ["train θ0"]  # no leave-dataset-out model
    assert results.truth.empty and "groundtruth_evaluations" not in results.counters
    assert len(list((tmp_path / "models").iterdir())) == 1
    fixed = Experiment(Config(**TINY, cache_dir=str(tmp_path)))  # fixed_steps reuses that θ0
    assert fixed.cache.has("models", fixed.spec(0, None).key())
    assert len(results.influence) == 4 and set(results.influence.method) == {"graddot"}
    top = results.examples
    assert list(top.columns) == ["method", "run", "train_dataset", "example", "test_subset", "score", "text"]
    assert len(top) == 3 and top.score.is_monotonic_decreasing and top.text.str.len().gt(0).all()


@pytest.mark.parametrize("method", registry())
def test_groundtruth_none_works_with_every_method(tmp_path, method):
    plugin = registry()[method]
    extra = {"hessian_examples": 8} if plugin.needs.pool else {}
    cfg = Config(**{**TINY, "method": plugin.config(name=method, **extra),
                    "train": TrainConfig(steps=4, batch_size=4, checkpoint_every=2)},
                 cache_dir=str(tmp_path), groundtruth=GroundTruthConfig(mode="none"), rank=RankConfig(top_k=2))
    results = run_experiment(cfg)
    final = results.influence[results.influence.is_final]
    assert len(final) == 4 and final.influence.notna().all() and results.truth.empty
    assert len(results.examples) == (2 if plugin.needs.examples else 0)


def test_one_training_dataset_with_a_ground_truth_is_refused_before_training(tmp_path, monkeypatch):
    import untrac.pipeline
    import untrac.store

    monkeypatch.setattr(untrac.store, "train", lambda *a, **k: pytest.fail("trained before the check"))
    exp = Experiment(Config(**TINY, cache_dir=str(tmp_path), groundtruth=GroundTruthConfig(mode="none")))
    exp.task.train = {"dataset1": exp.task.train["dataset1"]}
    exp.cfg.groundtruth = GroundTruthConfig()
    with pytest.raises(UntracError, match="one training dataset \\(dataset1\\).*groundtruth.mode=none"):
        exp._check_batch_sizes()


def test_batch_size_is_checked_against_the_pools_that_are_trained(tmp_path):
    """32 examples in 4 datasets of 8: θ−Z pools hold 24, θ0's 32; mode=none trains only θ0."""
    big = {**TINY, "train": TrainConfig(steps=4, batch_size=30)}
    with pytest.raises(UntracError, match="smallest leave-dataset-out training set \\(24 examples\\)"):
        Experiment(Config(**big, cache_dir=str(tmp_path)))
    Experiment(Config(**big, cache_dir=str(tmp_path), groundtruth=GroundTruthConfig(mode="none")))
    with pytest.raises(UntracError, match="larger than the training set \\(32 examples\\)"):
        Experiment(Config(**{**TINY, "train": TrainConfig(steps=4, batch_size=33)}, cache_dir=str(tmp_path),
                          groundtruth=GroundTruthConfig(mode="none")))


@pytest.mark.parametrize("needs", [Needs(), Needs(checkpoints=True), Needs(unlearning=True, examples=True),
                                   Needs(pool=True)])
def test_the_context_carries_what_the_method_declared(tmp_path, monkeypatch, needs):
    """A toy plugin (registered here, nothing else edited) gets exactly what its Needs ask for."""
    seen = []

    def score(context):
        seen.append(context)
        return final_rows({(z, s): 0.0 for z in context.train for s in context.test})

    monkeypatch.setattr(untrac.methods, "_REGISTRY", dict(registry()))
    config = PoolConfig(name="toy", hessian_examples=8) if needs.pool else MethodConfig(name="toy")
    register(Method("toy", type(config), score, needs))
    cfg = Config(**{**TINY, "method": config,
                    "train": TrainConfig(steps=4, batch_size=4, checkpoint_every=2)},
                 cache_dir=str(tmp_path), groundtruth=GroundTruthConfig(mode="none"), rank=RankConfig(top_k=2))
    results = run_experiment(cfg)
    (context,) = seen
    assert set(results.influence.method) == {"toy"} and context.method == config
    assert [c.step for c in context.checkpoints] == ([2, 4] if needs.checkpoints else [])
    assert (context.optim, context.unlearn) == ((cfg.optim, cfg.unlearn) if needs.unlearning else (None, None))
    assert (context.store is not None) == needs.unlearning
    assert context.examples == ([] if needs.examples else None)
    assert (len(context.hessian_pool) if needs.pool else context.hessian_pool) == (8 if needs.pool else None)


def test_the_bank_trains_each_subset_on_the_rest_and_shares_the_leave_one_out_models(tmp_path, monkeypatch):
    """groundtruth.mode=subsets: one model per subset S, trained T steps on the datasets not in S;
    θ−∅ = θ0, θ−D = the initial weights, θ0 and θ−Z under fixed_steps' keys; v(S) = L(θ−S) − L(θ0)."""
    import untrac.pipeline
    import untrac.store
    from untrac.subsets import bank_tables

    pools = {}
    real_train = untrac.store.train

    def recording_train(model, arch, pool, optimizer, device, run):
        pools[run.desc] = sorted(tuple(ids) for ids in pool["input_ids"])
        return real_train(model, arch, pool, optimizer, device, run)

    monkeypatch.setattr(untrac.store, "train", recording_train)
    cfg = Config(**{**TINY, "method": MethodConfig(name="graddot")}, cache_dir=str(tmp_path),
                 groundtruth=GroundTruthConfig(mode="subsets"))
    results = run_experiment(cfg)
    exp = Experiment(Config(**TINY, cache_dir=str(tmp_path)))  # fixed_steps finds θ0 and every θ−Z trained
    names = list(exp.task.train)
    assert all(exp.cache.has("models", exp.spec(0, z).key()) for z in [None, *names])
    assert len(pools) == 2 ** 4 - 1  # every subset but "all removed" (the initial weights) is trained
    rows = {z: [tuple(ids) for ids in ds["input_ids"]] for z, ds in exp.task.train.items()}
    assert pools["train θ−dataset1+dataset3"] == sorted(rows["dataset2"] + rows["dataset4"])
    bank = results.subsets
    assert len(bank) == 16 and set(bank.columns) == {"run", "seed", "removed", "test_subset", "loss", "influence"}
    v = bank.set_index("removed").influence
    assert v[""] == 0.0
    truth = results.truth.set_index("train_dataset").influence
    assert all(v[z] == pytest.approx(truth[z]) for z in names)  # leave-one-out is part of the bank
    test = exp.task.test["test"]
    theta0 = exp.trained(0).cpu()
    initial = untrac.models.build_model(cfg.model, exp.tokenizer, 0)[0].eval()
    assert v["+".join(names)] == pytest.approx(_hand_loss(initial, test) - _hand_loss(theta0, test), rel=1e-4)
    two = exp.trained(0, exclude=("dataset2", "dataset4")).cpu()
    assert v["dataset2+dataset4"] == pytest.approx(_hand_loss(two, test) - _hand_loss(theta0, test), rel=1e-4)
    tables = bank_tables(results.influence, bank, names)
    assert len(tables["lds"]) == 1 and tables["lds"].n_subsets.item() == 15
    shap = tables["shapley"].set_index("train_dataset")
    assert shap.shapley.sum() == pytest.approx(v["+".join(names)])  # efficiency on the measured game
