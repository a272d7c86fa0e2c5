"""Attribution methods as plugins: each turns θ0 and the data into influence rows (DESIGN §2, §6).

A method is one ``Method``: its ``name``, its typed config (a subclass of
``untrac.method_config.MethodConfig``), what it ``needs`` from the pipeline beyond θ0 and the data, and
``score(context) -> DataFrame`` with columns ``COLUMNS`` (record.SCORE_COLUMNS:
``train_dataset, test_subset, step, is_final, influence``) in the shared sign convention: influence = test loss after removing/unlearning Z −
before; positive means Z helped on Z'.

Adding a method = three pieces, nothing else names it:
  1. its config schema, a torch-free dataclass in ``untrac.method_config`` entered in ``SCHEMAS``
     (so a config is composed and checked before torch loads: ``register_configs`` reads ``SCHEMAS``);
  2. one module in this package that calls ``register(Method(name, Schema, score, Needs(...)))`` at
     import (``register`` refuses a schema other than its ``SCHEMAS`` entry, and a duplicate name);
  3. ``conf/method/<name>.yaml`` (``defaults: [/method_schema/<name>@method, _self_]``).
``registry()`` imports every module of this package (``pkgutil``), so a new module is found without
being listed; the pipeline and the tests read the registry.
"""

import copy
import importlib
import pkgutil
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import datasets
import pandas as pd
import torch

from untrac.config import OptimConfig, UnlearnConfig, _check
from untrac.method_config import SCHEMAS, MethodConfig, PoolConfig
from untrac.errors import UntracError
from untrac.models import Arch
from untrac.record import SCORE_COLUMNS

COLUMNS = SCORE_COLUMNS  # the output contract: untrac.record


@dataclass
class Checkpoint:
    """A TracIn checkpoint: the training step, its learning rate η_t, and ``load(model)`` putting θ_t in it."""

    step: int
    lr: float
    load: Callable[[torch.nn.Module], torch.nn.Module]


@dataclass(frozen=True)
class Needs:
    """What a method asks the pipeline for beyond θ0, the data and its config; the context carries only these."""

    checkpoints: bool = False  # θ_t saved while training θ0 (TracIn)
    pool: bool = False  # a sample of ``config.hessian_examples`` training examples (config: a PoolConfig)
    unlearning: bool = False  # the unlearning optimizer and schedule (optim, unlearn) and the piece store
    examples: bool = False  # per-example scores for rank.top_k (examples.csv)
    texts: bool = False  # each scored example and test example as text (the text-overlap baselines)


@dataclass
class Context:
    """What ``Method.score`` receives; the optional fields are filled only when the method's ``Needs`` ask."""

    theta0: torch.nn.Module  # never modified: methods copy it (``fresh_model``)
    arch: Arch
    device: torch.device
    train: dict[str, datasets.Dataset]  # the examples scored for each training dataset
    test: dict[str, datasets.Dataset]  # the test subsets
    method: MethodConfig  # the method's own config (its subclass)
    seed: int
    dtype: str = "float32"
    counters: dict = field(default_factory=dict)
    optim: OptimConfig | None = None  # Needs.unlearning
    unlearn: UnlearnConfig | None = None  # Needs.unlearning
    store: Any = None  # Needs.unlearning: untrac.pieces.PieceStore, finished trajectories kept for a rerun
    hessian_pool: datasets.Dataset | None = None  # Needs.pool: the training mixture sample
    checkpoints: list[Checkpoint] = field(default_factory=list)  # Needs.checkpoints
    # Needs.examples and rank.top_k set: a list the method appends per-example scores to, DataFrames
    # ``train_dataset, example, test_subset, score`` (example = index in the scored sample); else None
    examples: list | None = None
    # Needs.texts: {"train": {dataset: [text of each scored example]}, "test": {subset: [texts]}}, as examples.csv shows them
    texts: dict | None = None

    def fresh_model(self) -> torch.nn.Module:
        return copy.deepcopy(self.theta0).to(self.device).eval()


@dataclass(frozen=True)
class Method:
    name: str
    config: type[MethodConfig]  # its schema; the ConfigStore node is ``config(name=name)``
    score: Callable[[Context], pd.DataFrame]
    needs: Needs = Needs()

    def settings(self, config: MethodConfig) -> MethodConfig:
        """``config`` as this method's type: the bare base (``Config()`` built in Python) becomes its defaults."""
        if type(config) is MethodConfig:
            return self.config(name=self.name)
        _check(isinstance(config, self.config),
               f"method={self.name} takes a {self.config.__name__}, got a {type(config).__name__}")
        # Hydra's `+method.key=v` gets past the schema: OmegaConf.to_object sets it as an attribute.
        extra = sorted(set(vars(config)) - {f.name for f in fields(config)})
        _check(not extra, f"method.{extra[0] if extra else ''} is not a setting of method={self.name} "
               f"({self.config.__name__})")
        return config


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method; a second method of the same name is an error (no silent replacement)."""
    if method.name in _REGISTRY:
        raise UntracError(f"method {method.name!r} is registered twice ({_REGISTRY[method.name].score.__module__} "
                          f"and {method.score.__module__})")
    declared = SCHEMAS.get(method.name, method.config)  # a method built in Python (a test's toy) has no entry
    if declared is not method.config:
        raise UntracError(f"method {method.name!r} registers {method.config.__name__}, but untrac.method_config.SCHEMAS "
                          f"declares {declared.__name__}")
    if method.needs.pool and not issubclass(method.config, PoolConfig):
        raise UntracError(f"method {method.name!r} needs a pool, so its config must subclass PoolConfig")
    _REGISTRY[method.name] = method
    return method


def registry() -> dict[str, Method]:
    """Name → method, after importing every module of this package (each registers its methods)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(_REGISTRY)


def get(name: str) -> Method:
    methods = registry()
    if name not in methods:
        raise UntracError(f"method={name!r} is not one of {', '.join(methods)}")
    return methods[name]


def final_rows(scores: dict[tuple[str, str], float]) -> pd.DataFrame:
    """Rows for methods without a trajectory: one final value per (train dataset, test subset)."""
    rows = [{"train_dataset": z, "test_subset": s, "step": 0, "is_final": True, "influence": v}
            for (z, s), v in scores.items()]
    return pd.DataFrame(rows, columns=COLUMNS)
