"""The optimizers as built from the config: what transformers' Trainer gave the authors."""

import torch

from untrac.config import OptimConfig
from untrac.optim import unlearning_optimizer


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
