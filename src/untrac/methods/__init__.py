"""Attribution methods: each turns θ0 and the data into influence rows (DESIGN §2, §6).

A method is a function ``score(inputs: ScoreInputs) -> pd.DataFrame`` with columns ``COLUMNS``
(``train_dataset, test_subset, step, is_final, influence``, record.SCORE_COLUMNS) in the shared sign convention:
influence = test loss after removing/unlearning Z − before; positive means Z helped on Z'.
"""

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import datasets
import pandas as pd
import torch

from untrac.config import MethodConfig, OptimConfig, UnlearnConfig
from untrac.models import Arch
from untrac.record import SCORE_COLUMNS

COLUMNS = SCORE_COLUMNS  # the output contract: untrac.record


@dataclass
class Checkpoint:
    """A TracIn checkpoint: the training step, its learning rate η_t, and ``load(model)`` putting θ_t in it."""

    step: int
    lr: float
    load: Callable[[torch.nn.Module], torch.nn.Module]


@dataclass
class ScoreInputs:
    theta0: torch.nn.Module  # never modified: methods copy it (``fresh_model``)
    arch: Arch
    device: torch.device
    train: dict[str, datasets.Dataset]  # the examples scored for each training dataset
    test: dict[str, datasets.Dataset]  # the test subsets
    method: MethodConfig
    optim: OptimConfig
    unlearn: UnlearnConfig
    seed: int
    dtype: str = "float32"
    hessian_pool: datasets.Dataset | None = None  # training mixture, for HIF's Hessian and EK-FAC's factors
    checkpoints: list[Checkpoint] = field(default_factory=list)
    counters: dict = field(default_factory=dict)
    store: Any = None  # untrac.pieces.PieceStore: finished pieces (trajectories) kept for a rerun
    # rank.top_k set: a list methods of EXAMPLE_METHODS append per-example scores to, one DataFrame
    # ``train_dataset, example, test_subset, score`` (example = index in the scored sample); None: not asked
    examples: list | None = None

    def fresh_model(self) -> torch.nn.Module:
        return copy.deepcopy(self.theta0).to(self.device).eval()


Method = Callable[[ScoreInputs], pd.DataFrame]


def registry() -> dict[str, Method]:
    """Name → scoring function (imported here, not at module load, to avoid an import cycle)."""
    from untrac.methods import ekfac, gradsim, hif, untrac

    return {"untrac": untrac.score_untrac, "untrac_inv": untrac.score_untrac_inv,
            "graddot": gradsim.score_graddot, "gradcos": gradsim.score_gradcos, "tracin": gradsim.score_tracin,
            "hif_lissa": hif.score_lissa, "hif_arnoldi": hif.score_arnoldi, "ekfac": ekfac.score_ekfac}


NEEDS_CHECKPOINTS = {"tracin"}
EXAMPLE_METHODS = ("untrac_inv", "graddot", "gradcos")  # methods that score single training examples
NEEDS_HESSIAN_POOL = {"hif_lissa", "hif_arnoldi", "ekfac"}


def final_rows(scores: dict[tuple[str, str], float]) -> pd.DataFrame:
    """Rows for methods without a trajectory: one final value per (train dataset, test subset)."""
    rows = [{"train_dataset": z, "test_subset": s, "step": 0, "is_final": True, "influence": v}
            for (z, s), v in scores.items()]
    return pd.DataFrame(rows, columns=COLUMNS)
