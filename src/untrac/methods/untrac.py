"""UnTrac (Eq. 2–3) and UnTrac-Inv (Eq. 4): influence as the loss change caused by unlearning."""

import logging

import pandas as pd

from untrac.methods import COLUMNS, ScoreInputs
from untrac.unlearn import Trajectory, unlearn

log = logging.getLogger(__name__)


def loss_changes(traj: Trajectory) -> pd.DataFrame:
    """Eq. 2 / Eq. 4 at every evaluated step: L(θ_step) − L(θ_0) per evaluated set.

    The row of the last step is marked final; if the ascent produced a non-finite loss, the final
    influence is NaN (recorded, never silently fed into correlations).
    """
    frame = traj.frame()
    start = frame[frame.step == 0].set_index("name").loss
    frame["influence"] = frame.loss - frame.name.map(start)
    frame["is_final"] = frame.step == frame.step.max()
    if traj.nonfinite_step is not None:
        frame.loc[frame.is_final, "influence"] = float("nan")
    return frame


def unlearn_each(inputs: ScoreInputs, forget_sets: dict, eval_sets: dict, forgotten_col: str, tag: str) -> pd.DataFrame:
    """From a fresh copy of θ0, unlearn each set of ``forget_sets`` and evaluate every ``eval_sets``.

    ``forgotten_col`` names the column that records what was unlearned (``train_dataset`` for
    UnTrac, ``test_subset`` for UnTrac-Inv); the evaluated sets fill the other one.
    """
    evaluated_col = "test_subset" if forgotten_col == "train_dataset" else "train_dataset"
    parts = []
    for name, forget in forget_sets.items():
        traj = unlearn(inputs.fresh_model(), inputs.arch, inputs.device, forget, eval_sets, inputs.optim,
                       inputs.unlearn, inputs.seed, inputs.dtype, desc=f"{tag}: unlearn {name}",
                       counters=inputs.counters)
        if traj.nonfinite_step is not None:
            inputs.counters.setdefault("nonfinite", []).append({"unlearned": name, "step": traj.nonfinite_step})
        parts.append(loss_changes(traj).rename(columns={"name": evaluated_col}).assign(**{forgotten_col: name}))
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def score_untrac(inputs: ScoreInputs) -> pd.DataFrame:
    """Eq. 2: unlearn each training dataset Z from θ0 by gradient ascent, evaluate every test subset."""
    return unlearn_each(inputs, inputs.train, inputs.test, "train_dataset", "untrac")


def score_untrac_inv(inputs: ScoreInputs) -> pd.DataFrame:
    """Eq. 4: unlearn each test subset Z' from θ0, evaluate the loss change on every training dataset."""
    return unlearn_each(inputs, inputs.test, inputs.train, "test_subset", "untrac_inv")
