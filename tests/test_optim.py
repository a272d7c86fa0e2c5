"""The optimizers as built from the config: what transformers' Trainer gave the authors."""

from pathlib import Path

import pytest
import torch
from transformers.optimization import Adafactor

from untrac.optim import unlearning_optimizer
from untrac.optim_config import OPTIMIZERS, OptimConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_adafactor_unlearns_at_a_constant_lr():
    """Authors' code: Trainer(--optim adafactor) = Adafactor(lr, scale_parameter=False,
    relative_step=False), warmup_init default False. With those off, every step uses lr itself."""
    param = torch.nn.Parameter(torch.zeros(3, 4))  # near 0 so float32 resolves a 5e-5 move
    opt = unlearning_optimizer([param], OptimConfig(name="adafactor", lr=5e-5))
    group = opt.param_groups[0]
    assert (group["lr"], group["relative_step"], group["scale_parameter"], group["warmup_init"]) == \
        (5e-5, False, False, False)
    for _ in range(3):
        before = param.detach().clone()
        param.grad = torch.full_like(param, 2.0)
        opt.step()
        # A uniform gradient: the factored second moment equals g², the RMS-normalised update is 1
        # per entry, so each step moves every entry by exactly lr (no relative or warm-up schedule).
        step = opt.state[param]["step"]
        lr = type(opt)._get_lr(group, opt.state[param])
        assert lr == 5e-5, f"step {step}: lr {lr}"
        torch.testing.assert_close(before - param.detach(), torch.full_like(param, 5e-5), rtol=1e-4, atol=0)


@pytest.mark.parametrize("name,kind,expected", [
    ("sgd", torch.optim.SGD, {"lr": 5e-5, "momentum": 0, "dampening": 0}),
    ("sgd_momentum", torch.optim.SGD, {"lr": 5e-5, "momentum": 0.9, "dampening": 0.9}),  # Table 4
    ("rmsprop", torch.optim.RMSprop, {"lr": 5e-5, "alpha": 0.99, "eps": 1e-8}),
    ("adam", torch.optim.Adam, {"lr": 5e-5, "betas": (0.9, 0.999), "eps": 1e-8}),
    ("adafactor", Adafactor, {"lr": 5e-5, "relative_step": False}),
])
def test_each_optim_option_builds_its_optimizer_with_its_values(name, kind, expected):
    """The optim group composed as ``optim=<name>`` → the one factory → the torch optimizer."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from untrac.run import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("config", overrides=[f"optim={name}"])).optim
    assert type(cfg) is OPTIMIZERS[name]
    opt = unlearning_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)
    assert type(opt) is kind
    assert {k: opt.param_groups[0][k] for k in expected} == expected


def test_a_key_of_another_optimizer_is_rejected_while_composing():
    from hydra import compose, initialize_config_dir

    from untrac.run import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(Exception, match=r"optim\.betas") as err:
            compose("config", overrides=["optim=sgd", "optim.betas=[0.9,0.99]"])
        assert "not in 'SGDConfig'" in str(err.value.__cause__)
        assert compose("config", overrides=["optim=adam", "optim.betas=[0.9,0.99]"]).optim.betas == [0.9, 0.99]
