"""Unlearning by gradient ascent, with the evaluated losses recorded along the way (Figure 2)."""

import logging
import math
from dataclasses import dataclass, field

import datasets
import pandas as pd
import torch
from untrac.progress import tqdm

from untrac.config import OptimConfig, UnlearnConfig
from untrac.data.collate import collate
from untrac.losses import batch_loss, dataset_loss
from untrac.models import Arch, autocast
from untrac.optim import unlearning_optimizer
from untrac.prepared import EvalBatches, TokenRows
from untrac.train import sample_order

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)  # six fields of which two are configs: named at every call
class UnlearnPlan:
    """Everything one unlearning run takes besides the model and the data: the same for every set
    unlearned from one θ0 (``methods.untrac`` hands one plan to every run, in-process or in a worker).

    ``arch``, ``device``, ``dtype``: how the model's loss is computed (``losses``, ``models.autocast``).
    ``optim``: the unlearning optimizer (the ``optim=`` group, Table 4). ``schedule``: batch size,
    epochs, step cap, evaluation interval, gradient clipping (``unlearn.*``). ``seed``: the sample order.
    """

    arch: Arch
    device: torch.device
    optim: OptimConfig
    schedule: UnlearnConfig
    seed: int
    dtype: str = "float32"


@dataclass
class Trajectory:
    """Loss of every evaluated set at each evaluation step; ``nonfinite_step`` if ascent blew up.

    ``counters``: the work the run did — ``forward_backward`` (ascent steps) and
    ``eval_forward_examples`` (examples evaluated) — added to the method's counters by the caller.
    """

    rows: list[dict] = field(default_factory=list)
    nonfinite_step: int | None = None
    steps: int = 0
    counters: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["step", "name", "loss"])

    def count(self, key: str, n: int) -> None:
        self.counters[key] = self.counters.get(key, 0) + n


def num_steps(n_examples: int, cfg: UnlearnConfig) -> int:
    """Epochs × batches per epoch, capped by ``max_steps`` (paper: 1 epoch at batch 1 for UnTrac)."""
    steps = cfg.epochs * math.ceil(n_examples / min(cfg.batch_size, n_examples))
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def ascent_step(model, batch, optimizer, plan: UnlearnPlan) -> float:
    """One step of Eq. 3: θ_i = θ_{i-1} + η ∇L(z_i, θ_{i-1}), i.e. descend on −L with any optimizer
    (clipped to ``plan.schedule.clip_grad`` when set)."""
    with autocast(plan.device, plan.dtype):
        loss = batch_loss(model, batch, plan.arch)
    optimizer.zero_grad(set_to_none=True)
    (-loss).backward()
    if plan.schedule.clip_grad:
        torch.nn.utils.clip_grad_norm_(model.parameters(), plan.schedule.clip_grad)
    optimizer.step()
    return loss.item()


def unlearn(model, forget: datasets.Dataset, evals: dict[str, datasets.Dataset], plan: UnlearnPlan,
            desc: str = "unlearn") -> Trajectory:
    """Ascend on ``forget``; evaluate every set in ``evals`` at step 0, every ``eval_every`` and at the end.

    Dropout is off (eval mode) so the ascent is deterministic and matches the gradient methods.
    A non-finite loss stops the run and is recorded rather than carried into the influence.
    """
    arch, device, cfg = plan.arch, plan.device, plan.schedule
    model.to(device).eval()
    optimizer = unlearning_optimizer(model.parameters(), plan.optim)
    total = num_steps(len(forget), cfg)
    traj = Trajectory(steps=total)

    def evaluate(step: int) -> bool:
        for name, ds in evals.items():
            loss = dataset_loss(model, ds, arch, device, cfg.eval_batch_size, plan.dtype)
            traj.rows.append({"step": step, "name": name, "loss": loss})
            traj.count("eval_forward_examples", len(ds))
            if not math.isfinite(loss):
                return False
        return True

    evaluate(0)
    # Fresh shuffles per epoch; a step count of whole epochs keeps every example seen equally often.
    # A batch larger than the set means "the whole set" (UnTrac-Inv's batch of 256, §5).
    if cfg.batch_size > len(forget):
        log.info("%s: unlearn.batch_size=%d > %d examples: one full batch per step", desc, cfg.batch_size,
                 len(forget))
    order = sample_order(len(forget), total, min(cfg.batch_size, len(forget)), plan.seed)
    for step, idx in enumerate(tqdm(order, total=total, desc=desc, leave=False), start=1):
        batch = {k: v.to(device) for k, v in collate(forget[idx], arch.pad_id).items()}
        loss = ascent_step(model, batch, optimizer, plan)
        traj.count("forward_backward", 1)
        if not math.isfinite(loss):
            traj.nonfinite_step = step
            log.warning("%s: non-finite loss at step %d; stopping this unlearning run", desc, step)
            break
        if step % cfg.eval_every == 0 or step == total:
            if not evaluate(step):
                traj.nonfinite_step = step
                log.warning("%s: non-finite evaluation loss at step %d; stopping", desc, step)
                break
    return traj


def unlearn_fast(model, forget: TokenRows, evals: dict[str, EvalBatches], plan: UnlearnPlan,
                 start: dict[str, float] | None = None, desc: str = "unlearn") -> Trajectory:
    """``unlearn`` on data prepared once (``untrac.prepared``), the same steps and the same numbers.

    ``start``: the evaluated losses at θ0 when already known (they are the same for every set
    unlearned from θ0, so ``methods.untrac`` computes them once); evaluated here otherwise.
    A test checks this against ``unlearn`` for every optimizer (tests/test_unlearn_fast.py).
    """
    arch, device, cfg = plan.arch, plan.device, plan.schedule
    model.to(device).eval()
    # Only what trains: with a LoRA adapter (untrac.lora) that is the adapter, the base stays frozen.
    optimizer = unlearning_optimizer([p for p in model.parameters() if p.requires_grad], plan.optim)
    total = num_steps(len(forget), cfg)
    traj = Trajectory(steps=total)

    def evaluate(step: int) -> bool:
        for name, batches in evals.items():
            loss = batches.loss(model, arch, device, plan.dtype)
            traj.rows.append({"step": step, "name": name, "loss": loss})
            traj.count("eval_forward_examples", len(batches))
            if not math.isfinite(loss):
                return False
        return True

    if start is None:
        evaluate(0)
    else:
        traj.rows += [{"step": 0, "name": name, "loss": start[name]} for name in evals]
    if cfg.batch_size > len(forget):
        log.info("%s: unlearn.batch_size=%d > %d examples: one full batch per step", desc, cfg.batch_size,
                 len(forget))
    order = sample_order(len(forget), total, min(cfg.batch_size, len(forget)), plan.seed)
    # Progress as in the reference loop: at paper scale one run is hours (§5.2, Appendix A.2).
    for step, idx in enumerate(tqdm(order, total=total, desc=desc, leave=False), start=1):
        loss = ascent_step(model, forget.batch(idx, arch.pad_id, device), optimizer, plan)
        traj.count("forward_backward", 1)
        if not math.isfinite(loss):
            traj.nonfinite_step = step
            log.warning("%s: non-finite loss at step %d; stopping this unlearning run", desc, step)
            break
        if (step % cfg.eval_every == 0 or step == total) and not evaluate(step):
            traj.nonfinite_step = step
            log.warning("%s: non-finite evaluation loss at step %d; stopping", desc, step)
            break
    return traj
