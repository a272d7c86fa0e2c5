"""The prefill job trains every model the run's ground truth needs (all groundtruth.seeds seeds)."""

from untrac.cache import make_key
from untrac.config import Config, DataConfig, GroundTruthConfig, ModelConfig, TrainConfig
from untrac.groundtruth import truth_seeds
from untrac.paper.prefill import PrefillJob, _schema, train_one
from untrac.pipeline import Experiment

TINY = dict(model=ModelConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32),
            data=DataConfig(n_per_dataset=8), train=TrainConfig(steps=2, batch_size=4))


def test_prefill_trains_the_model_for_every_ground_truth_seed(tmp_path):
    cfg = _schema()(**TINY, runs=2, cache_dir=str(tmp_path), groundtruth=GroundTruthConfig(seeds=2),
                    prefill=PrefillJob(run=1, model=2))
    message = train_one(cfg)
    seeds = truth_seeds(cfg, 1)
    assert seeds == [1, 1001] and message.count("trained") == 2
    exp = Experiment(Config(**TINY, runs=2, cache_dir=str(tmp_path), groundtruth=GroundTruthConfig(seeds=2)))
    for seed in seeds:  # exactly what the scoring run will look up
        assert exp.cache.has("models", make_key(exp.model_fields(seed, "dataset2")))
    assert not exp.cache.has("models", make_key(exp.model_fields(1, None)))  # model 2 is θ−dataset2 only
    assert train_one(cfg).count("already cached") == 2


def test_prefill_skips_leave_out_models_when_there_is_no_ground_truth(tmp_path):
    cfg = _schema()(**TINY, cache_dir=str(tmp_path), groundtruth=GroundTruthConfig(mode="none"),
                    prefill=PrefillJob(run=0, model=1))
    assert "past the 1 models of groundtruth.mode=none" in train_one(cfg)


def test_prefill_trains_each_model_of_the_bank_the_scoring_run_looks_up(tmp_path):
    """groundtruth.mode=subsets: after θ0 and the K θ−Z come the bank's other θ−S (15 for K = 4)."""
    bank = GroundTruthConfig(mode="subsets")
    for model in (5, 14, 15):
        cfg = _schema()(**TINY, cache_dir=str(tmp_path), groundtruth=bank, prefill=PrefillJob(model=model))
        message = train_one(cfg)
        assert ("past the 15 models" in message) == (model == 15), message
    exp = Experiment(Config(**TINY, cache_dir=str(tmp_path), groundtruth=bank))
    assert exp.cache.has("models", make_key(exp.model_fields(0, ("dataset1", "dataset2"))))  # model 5
    assert exp.cache.has("models", make_key(exp.model_fields(0, ("dataset2", "dataset3", "dataset4"))))  # 14
