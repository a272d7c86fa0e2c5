"""The unlearning optimizer (the ``optim=`` group, paper §5 and §6.2's Table 4): one dataclass per
optimizer, each a ConfigStore node, so a key of another optimizer (``optim=sgd optim.betas=…``) is
rejected while composing. Defaults are torch's (transformers' for Adafactor); conf/optim/*.yaml
set only the paper's deviations from them, with citations. ``untrac.optim.unlearning_optimizer``
builds the optimizer; this module stays torch-free so a config is checked before torch loads.
"""

from dataclasses import dataclass, field

from untrac.checks import check, one_of, positive


@dataclass
class OptimConfig:
    """What every unlearning optimizer takes: §5's constant learning rate 5e-5, no weight decay."""

    name: str = "adam"
    lr: float = 5e-5
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        one_of(self.name, tuple(OPTIMIZERS), "optim")
        positive(self.lr, "optim.lr")
        check(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class SGDConfig(OptimConfig):
    name: str = "sgd"


@dataclass
class SGDMomentumConfig(OptimConfig):
    name: str = "sgd_momentum"
    momentum: float = 0.0
    dampening: float = 0.0


@dataclass
class RMSpropConfig(OptimConfig):
    name: str = "rmsprop"
    alpha: float = 0.99
    eps: float = 1e-8


@dataclass
class AdamConfig(OptimConfig):
    name: str = "adam"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas must be two values in [0, 1)")


@dataclass
class AdafactorConfig(OptimConfig):
    """relative_step / scale_parameter / warmup_init are off (untrac.optim), not options."""

    name: str = "adafactor"


# optim=<name> → its schema (conf/optim/<name>.yaml extends base_<name>)
OPTIMIZERS = {c.name: c for c in (SGDConfig, SGDMomentumConfig, RMSpropConfig, AdamConfig, AdafactorConfig)}
