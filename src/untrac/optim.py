"""Optimizers for training (``train.optim``) and for unlearning (the ``optim=`` group, paper §6.2)."""

import torch
from transformers.optimization import Adafactor

from untrac.config import OptimConfig


def unlearning_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The five optimizers of Table 4, at a constant learning rate and without clipping."""
    if cfg.name in ("sgd", "sgd_momentum"):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                weight_decay=cfg.weight_decay)
    if cfg.name == "adafactor":
        # A constant explicit lr: relative_step, scale_parameter and warmup_init off, which is what
        # transformers' Trainer builds for `--optim adafactor` (the authors' §5.1 scripts).
        return Adafactor(params, lr=cfg.lr, relative_step=False, scale_parameter=False, warmup_init=False,
                         weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown unlearning optimizer {cfg.name!r}")


def training_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adafactor":
        return Adafactor(params, lr=lr, relative_step=False, scale_parameter=False, warmup_init=False,
                         weight_decay=weight_decay)
    raise ValueError(f"unknown training optimizer {name!r}")
