"""The training loop shared by θ0 and every leave-dataset-out model θ−Z (paper §2, Eq. 1)."""

import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import datasets
import torch
from untrac.progress import tqdm

from untrac.data.collate import collate
from untrac.errors import UntracError
from untrac.losses import batch_loss
from untrac.models import Arch, autocast

log = logging.getLogger(__name__)

Checkpoint = Callable[[int, float, torch.nn.Module], None]


def sample_order(pool_size: int, steps: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """``steps`` batches drawn without replacement, reshuffling at each pass over the pool.

    θ0 and θ−Z use the same seed, so they see the same stream of random draws and differ only in
    the pool the draws index: the paper's z_t ~ D \\ Z with everything else held fixed.
    """
    gen = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(pool_size, generator=gen).tolist(), 0
    for _ in range(steps):
        batch = []
        while len(batch) < batch_size:
            if pos == pool_size:
                perm, pos = torch.randperm(pool_size, generator=gen).tolist(), 0
            take = min(batch_size - len(batch), pool_size - pos)
            batch.extend(perm[pos:pos + take])
            pos += take
        yield batch


def steps_for(pool_size: int, batch_size: int, fixed_steps: int, epochs: int, mode: str) -> int:
    """fixed_steps: T for every model (paper §2); all_examples: ``epochs`` passes over the pool (App. A.1)."""
    if mode == "fixed_steps":
        return fixed_steps
    return epochs * math.ceil(pool_size / batch_size)


@dataclass(frozen=True)
class TrainRun:
    """One training run's settings besides the model, its pool, optimizer and device (``train``)."""

    steps: int
    batch_size: int
    seed: int
    dtype: str = "float32"
    checkpoint_every: int | None = None
    on_checkpoint: Checkpoint | None = None
    clip_grad: float | None = None
    name: str = "the model"
    desc: str = "train"
    lr_factor: Callable[[int], float] | None = None  # × lr at each step (a pretraining schedule); None: constant
    lr_key: str = "train.lr"  # the setting a divergence message asks to lower


def train(model: torch.nn.Module, arch: Arch, pool: datasets.Dataset, optimizer: torch.optim.Optimizer,
          device: torch.device, run: TrainRun) -> list[float]:
    """Minimise the mean example loss on batches from ``pool``; returns the loss of every step.

    A non-finite loss, or non-finite weights after the last step, stops training at once with one
    line naming ``run.name`` and the step: such a model would score NaN everywhere, and must not be cached.

    ``run.clip_grad``: rescale the gradient to at most this global L2 norm before each step, as
    transformers' Trainer does with ``max_grad_norm`` (the authors' θ0 training, default 1.0).
    The learning rate is constant: the authors' Trainer arguments default to
    ``constant_with_warmup`` with 0 warm-up steps (``run.lr_factor`` schedules only the stand-in's pretraining).
    """
    steps, batch_size, seed, dtype, name = run.steps, run.batch_size, run.seed, run.dtype, run.name
    clip_grad, checkpoint_every, on_checkpoint, desc = run.clip_grad, run.checkpoint_every, run.on_checkpoint, run.desc
    model.to(device).train()
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, run.lr_factor) if run.lr_factor else None
    losses = []
    bar = tqdm(sample_order(len(pool), steps, batch_size, seed), total=steps, desc=desc, leave=False)
    for step, idx in enumerate(bar, start=1):
        batch = {k: v.to(device) for k, v in collate(pool[idx], arch.pad_id).items()}
        with autocast(device, dtype):
            loss = batch_loss(model, batch, arch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        if schedule:
            schedule.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise UntracError(f"training {name} diverged at step {step}: loss {losses[-1]}; lower {run.lr_key}")
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
        if on_checkpoint and checkpoint_every and step % checkpoint_every == 0:
            on_checkpoint(step, optimizer.param_groups[0]["lr"], model)
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise UntracError(f"training {name} diverged at step {steps}: its weights are not finite; lower {run.lr_key}")
    model.eval()
    return losses
