"""Optimizers for training (``train.optim``) and for unlearning (the ``optim=`` group, paper §6.2)."""

from dataclasses import asdict
from functools import partial

import torch
from transformers.optimization import Adafactor

from untrac.optim_config import OptimConfig

# optim=<name> → the torch optimizer its config's fields are passed to (Table 4's five). Adafactor at a
# constant explicit lr: relative_step, scale_parameter and warmup_init off, which is what
# transformers' Trainer builds for `--optim adafactor` (the authors' §5.1 scripts).
UNLEARNING = {"sgd": torch.optim.SGD, "sgd_momentum": torch.optim.SGD, "rmsprop": torch.optim.RMSprop,
              "adam": torch.optim.Adam,
              "adafactor": partial(Adafactor, relative_step=False, scale_parameter=False, warmup_init=False)}


def unlearning_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The unlearning optimizer of ``cfg`` (its fields are the constructor's arguments), at a
    constant learning rate and without clipping."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in asdict(cfg).items() if k != "name"}
    return UNLEARNING[cfg.name](params, **kwargs)


TRAINING = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD,
            "adafactor": UNLEARNING["adafactor"]}  # train.optim (config.TRAIN_OPTIMIZERS)


def training_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return TRAINING[name](params, lr=lr, weight_decay=weight_decay)
