"""The composed config: every group option loads, and bad values fail with a message naming the key."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from untrac.config import Config, OptimConfig, TrainConfig, UnlearnConfig, register_configs
from untrac.errors import UntracError

CONF = Path(__file__).resolve().parents[1] / "conf"


def load(*overrides: str) -> Config:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=list(overrides)))


def test_default_is_the_embedded_job():
    cfg = load()
    assert (cfg.model.name, cfg.data.name, cfg.method.name, cfg.optim.name) == ("t5_tiny", "synthA", "untrac", "adam")
    assert cfg.optim.lr == 5e-5 and cfg.unlearn.batch_size == 1 and cfg.unlearn.epochs == 1


@pytest.mark.parametrize("group,options", [
    ("model", ["t5_tiny", "opt_tiny", "t5xl", "opt125m", ["local", "model.name_or_path=/ckpt"]]),
    ("method", ["untrac", "untrac_inv", "graddot", "gradcos", "tracin", "hif_lissa", "hif_arnoldi"]),
    ("optim", ["sgd", "sgd_momentum", "rmsprop", "adam", "adafactor"]),
])
def test_every_group_option_composes(group, options):
    for option in options:
        option, *more = [option] if isinstance(option, str) else option
        cfg = load(f"{group}={option}", *more)
        assert getattr(cfg, group).name == option


def test_pile8_needs_a_pile8_testset():
    assert load("data=pile8", "testset=toxigen").data.kind == "pile8"
    with pytest.raises(UntracError, match="testset"):
        load("data=pile8")


def test_untrac_inv_uses_the_paper_schedule():
    cfg = load("method=untrac_inv")
    assert (cfg.unlearn.batch_size, cfg.unlearn.epochs) == (256, 5)


@pytest.mark.parametrize("build,key", [
    (lambda: OptimConfig(lr=0), "optim.lr"),
    (lambda: OptimConfig(lr=-1e-5), "optim.lr"),
    (lambda: OptimConfig(name="lion"), "optim"),
    (lambda: TrainConfig(steps=-1), "train.steps"),  # 0 is allowed: θ0 is the given model
    (lambda: UnlearnConfig(batch_size=0), "unlearn.batch_size"),
    (lambda: Config(runs=0), "runs"),
])
def test_range_checks_name_the_key(build, key):
    with pytest.raises(UntracError, match=key.replace(".", r"\.")):
        build()


def test_schema_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(Exception, match="lrr"):
        load("optim.lrr=1")
    with pytest.raises(Exception, match="runs"):
        load("runs=abc")


def test_own_files_and_checkpoint_compose_from_the_command_line():
    """Dict values given on the command line replace the presets' empty maps (Hydra's struct lock is off there)."""
    cfg = load("data=files", "data.train={news: /d/a.jsonl, code: 'b c.parquet'}", "testset=files",
               "testset.subsets={toxic: /d/t.jsonl}", "model=local", "model.name_or_path=/ckpt", "train.steps=0")
    assert cfg.data.train == {"news": "/d/a.jsonl", "code": "b c.parquet"} and cfg.data.kind == "files"
    assert cfg.testset.subsets == {"toxic": "/d/t.jsonl"} and cfg.train.steps == 0
    assert (cfg.model.arch, cfg.model.tokenizer) == ("auto", "/ckpt")  # the tokenizer defaults to the folder
    grouped = load("data=files", "data.path=/d/all.jsonl", "data.group_column=source", "testset=toxigen")
    assert (grouped.data.path, grouped.data.group_column, grouped.data.train) == ("/d/all.jsonl", "source", {})
    with pytest.raises(UntracError, match="model=local needs model.name_or_path"):
        load("model=local")
    with pytest.raises(UntracError, match="data=files needs data.train"):
        load("data=files", "testset=files", "testset.subsets={t: t.jsonl}")
