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


def score_untrac(inputs: ScoreInputs) -> pd.DataFrame:
    """Eq. 2: unlearn each training dataset Z from θ0 by gradient ascent, evaluate every test subset."""
    parts = []
    for z, forget in inputs.train.items():
        model = inputs.fresh_model()
        traj = unlearn(model, inputs.arch, inputs.device, forget, inputs.test, inputs.optim, inputs.unlearn,
                       inputs.seed, inputs.dtype, desc=f"untrac: unlearn {z}", counters=inputs.counters)
        frame = loss_changes(traj).rename(columns={"name": "test_subset"})
        frame["train_dataset"] = z
        parts.append(frame)
        _note_nonfinite(inputs, traj, z)
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def score_untrac_inv(inputs: ScoreInputs) -> pd.DataFrame:
    """Eq. 4: unlearn each test subset Z' from θ0, evaluate the loss change on every training dataset."""
    parts = []
    for subset, forget in inputs.test.items():
        model = inputs.fresh_model()
        traj = unlearn(model, inputs.arch, inputs.device, forget, inputs.train, inputs.optim, inputs.unlearn,
                       inputs.seed, inputs.dtype, desc=f"untrac_inv: unlearn {subset}", counters=inputs.counters)
        frame = loss_changes(traj).rename(columns={"name": "train_dataset"})
        frame["test_subset"] = subset
        parts.append(frame)
        _note_nonfinite(inputs, traj, subset)
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def _note_nonfinite(inputs: ScoreInputs, traj: Trajectory, name: str) -> None:
    if traj.nonfinite_step is not None:
        inputs.counters.setdefault("nonfinite", []).append({"unlearned": name, "step": traj.nonfinite_step})
