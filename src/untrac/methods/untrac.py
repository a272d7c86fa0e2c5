"""UnTrac (Eq. 2–3) and UnTrac-Inv (Eq. 4): influence as the loss change caused by unlearning."""

import logging
from dataclasses import asdict

import numpy as np
import pandas as pd

from untrac.lora import sharing_copy, unlearnable
from untrac.method_config import MethodConfig
from untrac.methods import COLUMNS, Context, Method, Needs, register
from untrac.parallel import resolve_workers, run_jobs
from untrac.pieces import tokens_digest
from untrac.prepared import EvalBatches, TokenRows, fused_activations
from untrac.unlearn import Trajectory, UnlearnPlan, num_steps, unlearn_fast

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


def _unlearn_one(shared: dict, job: tuple[str, TokenRows]) -> tuple[str, dict]:
    """One unlearning run from a fresh θ0 (in this process or a worker): the stored piece."""
    name, forget = job
    s, plan = shared, shared["plan"]
    for batches in s["evals"].values():
        batches.last = None
    with unlearnable(s["theta0"], plan.schedule, plan.seed) as model:  # a copy of θ0, or θ0 + a LoRA adapter
        model = fused_activations(model).to(plan.device).eval()
        traj = unlearn_fast(model, forget, s["evals"], plan, start=s["start"], desc=f"{s['tag']}: unlearn {name}")
    return name, {"rows": traj.rows, "nonfinite_step": traj.nonfinite_step, "steps": traj.steps,
                  "counters": traj.counters, "example_losses": _example_losses(s, traj)}


def _example_losses(shared: dict, traj: Trajectory) -> dict | None:
    """Each evaluated example's loss at θ0 and after the run (the final evaluation's, kept by
    ``EvalBatches.last``): UnTrac-Inv's per-example influences (``example_changes``)."""
    if traj.nonfinite_step is not None:
        return None
    return {name: {"before": shared["start_examples"][name], "after": batches.last.tolist()}
            for name, batches in shared["evals"].items()}


def example_changes(pieces: dict, forgotten_col: str) -> pd.DataFrame:
    """Eq. 4 at the level of one example: L(z_i, θ_after) − L(z_i, θ0) for every evaluated example i;
    its mean over a set's examples is that set's influence (a set's loss is its examples' mean)."""
    evaluated_col = "test_subset" if forgotten_col == "train_dataset" else "train_dataset"
    parts = []
    for forgotten, piece in pieces.items():
        for name, loss in (piece.get("example_losses") or {}).items():
            change = np.asarray(loss["after"]) - np.asarray(loss["before"])
            parts.append(pd.DataFrame({evaluated_col: name, "example": np.arange(len(change)),
                                       forgotten_col: forgotten, "score": change}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def piece_fields(inputs: Context, tag: str, forget: TokenRows, eval_digests: dict[str, str]) -> dict:
    """What determines one trajectory besides θ0 (whose key the store adds)."""
    schedule = {k: v for k, v in asdict(inputs.unlearn).items() if k != "workers"}  # any count, same numbers
    if schedule["params"] == "full":  # the keys of full unlearning stay as they were before LoRA
        del schedule["params"], schedule["lora"]
    return {"method": tag, "forget": tokens_digest(forget.columns), "evals": eval_digests,
            "optim": asdict(inputs.optim), "unlearn": schedule, "seed": inputs.seed, "dtype": inputs.dtype}


def unlearn_each(inputs: Context, forget_sets: dict, eval_sets: dict, forgotten_col: str, tag: str) -> pd.DataFrame:
    """From a fresh copy of θ0, unlearn each set of ``forget_sets`` and evaluate every ``eval_sets``.

    ``forgotten_col`` names the column that records what was unlearned (``train_dataset`` for
    UnTrac, ``test_subset`` for UnTrac-Inv); the evaluated sets fill the other one. Each finished
    run is put in ``inputs.store`` at once; runs found there are not redone.
    """
    evaluated_col = "test_subset" if forgotten_col == "train_dataset" else "train_dataset"
    cfg, store = inputs.unlearn, inputs.store
    forgets = {name: TokenRows.of(ds) for name, ds in forget_sets.items()}
    evals = {name: EvalBatches.of(ds, inputs.arch, cfg.eval_batch_size, inputs.device) for name, ds in eval_sets.items()}
    digests = {name: tokens_digest(TokenRows.of(ds).columns) for name, ds in eval_sets.items()} if store else {}
    fields = {name: piece_fields(inputs, tag, rows, digests) for name, rows in forgets.items()} if store else {}
    pieces = {name: store.get(fields[name]) for name in forgets} if store else {}
    # Per-example losses are asked for: a piece stored without them (older runs) is done again.
    pieces = {name: piece for name, piece in pieces.items()
              if piece is not None and (inputs.examples is None or "example_losses" in piece)}
    if pieces:
        log.info("%s: %d of %d unlearning runs reused from the cache", tag, len(pieces), len(forgets))
        inputs.counters["pieces_reused"] = inputs.counters.get("pieces_reused", 0) + len(pieces)
    todo = [(name, rows) for name, rows in forgets.items() if name not in pieces]
    if todo:
        # θ0's losses open every trajectory: evaluated once here, not once per unlearned set.
        # Only evaluated: a copy sharing θ0's weights (θ0 is on the device; a full copy is 27 GB at 7B in fp32).
        theta0 = fused_activations(sharing_copy(inputs.theta0)).to(inputs.device).eval()
        start = {name: batches.loss(theta0, inputs.arch, inputs.device, inputs.dtype) for name, batches in evals.items()}
        start_examples = {name: batches.last.tolist() for name, batches in evals.items()}
        inputs.counters["eval_forward_examples"] = (inputs.counters.get("eval_forward_examples", 0)
                                                    + sum(len(b) for b in evals.values()))
        # Only what a run needs travels to the workers (not the datasets or the cache).
        plan = UnlearnPlan(arch=inputs.arch, device=inputs.device, optim=inputs.optim, schedule=cfg,
                           seed=inputs.seed, dtype=inputs.dtype)
        shared = {"theta0": inputs.theta0, "plan": plan, "evals": evals, "start": start,
                  "start_examples": start_examples, "tag": tag}
        steps = min(num_steps(len(rows), cfg) for _, rows in todo)
        workers = resolve_workers(cfg.workers, len(todo), inputs.device, steps)
        for name, piece in run_jobs(_unlearn_one, shared, todo, workers):
            if store:
                store.put(fields[name], piece)
            pieces[name] = piece
            log.info("%s: unlearned %s (%d steps)", tag, name, piece["steps"])
    parts = []
    for name in forgets:  # the order of the sets, whatever order the runs finished in
        piece = pieces[name]
        for key, n in piece["counters"].items():
            inputs.counters[key] = inputs.counters.get(key, 0) + n
        traj = Trajectory(rows=piece["rows"], nonfinite_step=piece["nonfinite_step"], steps=piece["steps"])
        if traj.nonfinite_step is not None:
            inputs.counters.setdefault("nonfinite", []).append({"unlearned": name, "step": traj.nonfinite_step})
        parts.append(loss_changes(traj).rename(columns={"name": evaluated_col}).assign(**{forgotten_col: name}))
    if inputs.examples is not None and forgotten_col == "test_subset":
        inputs.examples.append(example_changes(pieces, forgotten_col))
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def score_untrac(inputs: Context) -> pd.DataFrame:
    """Eq. 2: unlearn each training dataset Z from θ0 by gradient ascent, evaluate every test subset."""
    return unlearn_each(inputs, inputs.train, inputs.test, "train_dataset", "untrac")


def score_untrac_inv(inputs: Context) -> pd.DataFrame:
    """Eq. 4: unlearn each test subset Z' from θ0, evaluate the loss change on every training dataset."""
    return unlearn_each(inputs, inputs.test, inputs.train, "test_subset", "untrac_inv")


# Neither has settings of its own: the optimizer (optim) and the schedule (unlearn) are their knobs.
register(Method("untrac", MethodConfig, score_untrac, Needs(unlearning=True)))
register(Method("untrac_inv", MethodConfig, score_untrac_inv, Needs(unlearning=True, examples=True)))
