"""Gradient utilities shared by the gradient baselines (GradDot, GradCos, TracIn, HIF; paper §4).

Everything works on one flat vector over the model's *trainable* parameters (``requires_grad``),
in a fixed order, so the methods can take dot products and the tests can freeze most of a tiny
model and build its Hessian explicitly.

Scaling (DESIGN §2: "loss of a (sub)set = mean over its examples"): a set's gradient is the
gradient of its MEAN loss, (1/N) Σ_i g_i. The paper's double sums (Eq. 7, 8) are these means
times N·N'; that factor is the same for every training dataset scored on the same number of
examples (256 per synthetic task, a fixed sample per pile8 corpus), so Pearson and Spearman
across training datasets do not see it. Means make the §4.3 identity literal: one full-batch SGD
ascent step of UnTrac moves θ by η·(1/N) Σ_i g_i, and changes the test loss by η·GradDot.

Counters (``inputs.counters``): ``forward_backward`` (batches through a backward pass, as in
unlearning), ``grad_examples`` (examples whose gradient was taken), ``hvp`` (Hessian- or
Gauss–Newton-vector products, one per batch/chunk) and ``hvp_examples`` (examples inside them).
"""

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import datasets
import torch
from torch.func import functional_call, grad, vmap
from untrac.progress import tqdm

from untrac.data.collate import batches, collate
from untrac.losses import example_losses
from untrac.models import Arch, autocast
from untrac.train import sample_order

if TYPE_CHECKING:
    from untrac.methods import Context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GradientSettings:
    """How a method takes its gradients, the same for every set it scores: the model's ``arch``,
    the ``device``, ``batch_size`` examples per forward/backward pass (memory: a set's gradient is
    the sum over its examples however it is cut) and the autocast ``dtype``.
    ``hessian.PoolOperator`` takes the same settings, with its pool chunk as the batch."""

    arch: Arch
    device: torch.device
    batch_size: int
    dtype: str = "float32"

    @classmethod
    def of(cls, inputs: "Context") -> "GradientSettings":
        """A method's settings: its context's arch, device and dtype, and ``method.per_example_batch``."""
        return cls(inputs.arch, inputs.device, inputs.method.per_example_batch, inputs.dtype)


def bump(counters: dict | None, key: str, n: int = 1) -> None:
    if counters is not None:
        counters[key] = counters.get(key, 0) + n


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters gradients are taken for: those with ``requires_grad`` (all of them, normally)."""
    return [p for p in model.parameters() if p.requires_grad]


def flatten(tensors, params: list[torch.nn.Parameter]) -> torch.Tensor:
    """Concatenate per-parameter tensors into one vector; ``None`` (parameter unused) becomes zeros."""
    return torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1) for t, p in zip(tensors, params)])


def unflatten(vector: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """Split a flat vector back into tensors shaped like ``params``."""
    return [chunk.view_as(p) for chunk, p in zip(vector.split([p.numel() for p in params]), params)]


@contextmanager
def eager_attention(model):
    """Run ``model`` with plain ("eager") attention for the duration of the block.

    The fused CPU SDPA kernel has no double backward (needed for HVPs), and HF's SDPA mask builder
    branches on the mask's values (which vmap cannot batch). Eager attention is the same function.
    """
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if before in (None, "eager") or not hasattr(model, "set_attn_implementation"):
        yield model
        return
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(before)


# -- set-level gradients ---------------------------------------------------------------------------
def mean_gradient(model, ds: datasets.Dataset, settings: GradientSettings, counters: dict | None = None,
                  desc: str = "gradient") -> torch.Tensor:
    """∇_θ (1/N) Σ_i L(z_i, θ): one gradient for the whole set, accumulated batch by batch.

    Each batch contributes the gradient of its *summed* example losses, so the result does not
    depend on how the set is cut into batches; dividing by N at the end gives the mean.
    """
    arch, device, batch_size = settings.arch, settings.device, settings.batch_size
    params = trainable(model)
    total = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=device)
    for batch in tqdm(batches(ds, batch_size, arch.pad_id, device=device), desc=desc, leave=False,
                      total=-(-len(ds) // batch_size)):
        with autocast(device, settings.dtype):
            loss = example_losses(model, batch, arch).sum()
        total += flatten(torch.autograd.grad(loss, params, allow_unused=True), params)
        bump(counters, "forward_backward")
        bump(counters, "grad_examples", len(batch["labels"]))
    return total / len(ds)


def example_gradients(model, ds: datasets.Dataset, settings: GradientSettings, counters: dict | None = None,
                      desc: str = "per-example gradients") -> Iterator[torch.Tensor]:
    """Rows g_i = ∇_θ L(z_i, θ) of ``ds``, one ``[batch, #trainable]`` block at a time, in dataset
    order; each block is dropped by the caller once used (the whole set's rows need not fit)."""
    arch, device, batch_size = settings.arch, settings.device, settings.batch_size
    for batch in tqdm(batches(ds, batch_size, arch.pad_id, device=device), desc=desc, leave=False,
                      total=-(-len(ds) // batch_size)):
        with autocast(device, settings.dtype):
            rows = per_example_gradients(model, batch, arch)
        bump(counters, "forward_backward")
        bump(counters, "grad_examples", len(batch["labels"]))
        yield rows


def unit_rows(rows: torch.Tensor) -> torch.Tensor:
    """g_i/‖g_i‖ for every row (a zero gradient stays zero)."""
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-30)


def mean_unit_gradient(model, ds: datasets.Dataset, settings: GradientSettings, counters: dict | None = None,
                       desc: str = "normalised gradient") -> torch.Tensor:
    """(1/N) Σ_i g_i/‖g_i‖: per-example gradients, each scaled to unit length, then averaged.

    Normalising stops outlier examples with huge gradients from dominating (Barshan et al. 2020,
    paper §4.1). The per-example gradients of a batch are summed at once and dropped.
    """
    params = trainable(model)
    total = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=settings.device)
    for rows in example_gradients(model, ds, settings, counters, desc):
        total += unit_rows(rows).sum(dim=0)
    return total / len(ds)


# -- per-example gradients -------------------------------------------------------------------------
class _ExampleLoss(torch.nn.Module):
    """Wraps ``model`` so ``functional_call`` can swap its parameters and vmap over examples."""

    def __init__(self, model, arch: Arch):
        super().__init__()
        self.model, self.arch = model, arch

    def forward(self, input_ids, attention_mask, labels):
        # vmap hands over one example without its batch axis: restore a batch of one.
        mask = attention_mask[None]
        if self.arch.kind == "seq2seq":
            # HF builds the encoder mask by testing the 2D mask's values (`mask.all()` to skip it),
            # a data-dependent branch vmap cannot batch. Hand it the additive 4D mask it would build
            # (0 = attend, dtype-min = padding), which T5 broadcasts over encoder and cross attention.
            dtype = next(self.model.parameters()).dtype
            mask = (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        batch = {"input_ids": input_ids[None], "attention_mask": mask, "labels": labels[None]}
        return example_losses(self.model, batch, self.arch)[0]


def per_example_gradients(model, batch: dict[str, torch.Tensor], arch: Arch, use_vmap: bool | None = None
                          ) -> torch.Tensor:
    """Rows g_i = ∇_θ L(z_i, θ) for every example of ``batch``, shape ``[batch, #trainable]``.

    ``torch.func`` (vmap over grad of a functional call) computes all rows in one vectorised pass;
    where a model does something vmap cannot batch, a plain autograd loop over the examples gives
    the same rows (tests check both agree). ``use_vmap=None`` tries vmap and remembers a failure.
    """
    params = trainable(model)
    if use_vmap is None:
        use_vmap = _VMAP_OK.get(type(model), True)
    if use_vmap:
        try:
            return _per_example_vmap(model, batch, arch, params)
        except RuntimeError as err:  # an op vmap cannot batch: use the loop from now on for this class
            _VMAP_OK[type(model)] = False
            log.warning("per-example gradients: vmap failed for %s (%s); using a loop",
                        type(model).__name__, str(err).splitlines()[0][:120])
    return _per_example_loop(model, batch, arch, params)


_VMAP_OK: dict[type, bool] = {}


def _per_example_vmap(model, batch, arch, params) -> torch.Tensor:
    wrapper = _ExampleLoss(model, arch)
    names = {id(p): n for n, p in wrapper.named_parameters()}
    train = {names[id(p)]: p.detach() for p in params}
    frozen = {n: p for n, p in wrapper.named_parameters() if n not in train}
    frozen.update(dict(wrapper.named_buffers()))

    def loss(train_params, input_ids, attention_mask, labels):
        return functional_call(wrapper, (train_params, frozen), (input_ids, attention_mask, labels))

    with eager_attention(model):
        rows = vmap(grad(loss), in_dims=(None, 0, 0, 0))(train, batch["input_ids"], batch["attention_mask"],
                                                         batch["labels"])
    return torch.cat([rows[names[id(p)]].reshape(len(batch["labels"]), -1) for p in params], dim=1)


def _per_example_loop(model, batch, arch, params) -> torch.Tensor:
    rows = []
    for i in range(len(batch["labels"])):
        one = {k: v[i:i + 1] for k, v in batch.items()}
        loss = example_losses(model, one, arch)[0]
        rows.append(flatten(torch.autograd.grad(loss, params, allow_unused=True), params))
    return torch.stack(rows)


# -- Hessian-vector products -----------------------------------------------------------------------
def hvp(model, batch: dict[str, torch.Tensor], arch: Arch, vector: torch.Tensor, dtype: str = "float32",
        counters: dict | None = None) -> torch.Tensor:
    """H v with H = ∇²_θ of the batch's mean loss, by double backward (Pearlmutter's trick).

    Differentiating gᵀv, where g = ∇L was built with ``create_graph``, gives Hv exactly without
    forming H: two backward passes, no hand-derived second derivatives.
    """
    params = trainable(model)
    with eager_attention(model), autocast(vector.device, dtype):
        loss = example_losses(model, batch, arch).mean()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    dot = sum((g * v).sum() for g, v in zip(grads, unflatten(vector, params)) if g is not None)
    hv = torch.autograd.grad(dot, params, allow_unused=True)
    bump(counters, "hvp")
    bump(counters, "hvp_examples", len(batch["labels"]))
    return flatten(hv, params).detach()


class HessianBatches:
    """Batches of the Hessian pool for stochastic HVPs: a fresh batch at every call (HIF's
    ``variant=authors``; the default HIF operator is ``hessian.PoolOperator``, the whole pool).

    Batches are drawn without replacement and the pool is reshuffled at every pass (the training
    sampler), so consecutive HVPs see different examples. With ``batch_size >= len(pool)`` every
    batch is the whole pool and each HVP is the exact Hessian of the pool's mean loss — what the
    tests use to compare against an explicit inverse.
    """

    def __init__(self, pool: datasets.Dataset, batch_size: int, arch: Arch, device: torch.device, seed: int):
        self.pool, self.arch, self.device = pool, arch, device
        self.batch_size = min(batch_size, len(pool))
        self._order: Iterator[list[int]] = sample_order(len(pool), 10**12, self.batch_size, seed)

    def __call__(self) -> dict[str, torch.Tensor]:
        idx = next(self._order)
        return {k: v.to(self.device) for k, v in collate(self.pool[idx], self.arch.pad_id).items()}


def pool_hvp(model, arch: Arch, draw: HessianBatches, dtype: str = "float32", counters: dict | None = None):
    """v ↦ H_b v on a fresh batch b from ``draw`` each call (what the authors' HIF baseline iterates)."""
    return lambda v: hvp(model, draw(), arch, v, dtype, counters)
