"""Data made ready once for the many passes of unlearning: plain token lists and pre-padded batches.

Profiling the unlearning loop (docs in scripts/bench.py) showed per-step ``Dataset.__getitem__``
(Arrow → Python lists) and re-collating the same evaluation batches at every evaluation as pure
overhead: the tokens never change. Here they are read from Arrow once; evaluation batches are
padded once, in the same length-sorted order and batch size as ``losses.per_example_losses``, so
the losses are bit-for-bit those of ``losses.dataset_loss``.
"""

from dataclasses import dataclass

import datasets
import torch
from transformers.activations import GELUTanh, NewGELUActivation

from untrac.data.collate import collate
from untrac.losses import example_losses
from untrac.models import Arch, autocast


@dataclass
class TokenRows:
    """A tokenised set as Python lists (what ``Dataset.__getitem__`` returns), read from Arrow once."""

    columns: dict[str, list[list[int]]]

    @classmethod
    def of(cls, ds: datasets.Dataset) -> "TokenRows":
        return cls({name: ds[name] for name in ds.column_names if name in ("input_ids", "labels")})

    def __len__(self) -> int:
        return len(self.columns["input_ids"])

    def batch(self, idx: list[int], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
        """The padded batch of examples ``idx``: exactly ``collate(ds[idx], pad_id)``."""
        picked = {name: [rows[i] for i in idx] for name, rows in self.columns.items()}
        return {k: v.to(device) for k, v in collate(picked, pad_id).items()}


@dataclass
class EvalBatches:
    """A set's evaluation batches, padded once (length-sorted, as ``losses.per_example_losses``)."""

    batches: list[dict[str, torch.Tensor]]
    order: list[int]  # dataset index of each example, in batch order
    last: torch.Tensor | None = None  # per-example losses of the latest evaluation (dataset order)

    @classmethod
    def of(cls, ds: datasets.Dataset, arch: Arch, batch_size: int, device: torch.device) -> "EvalBatches":
        rows = TokenRows.of(ds)
        if "labels" in rows.columns:
            order = torch.tensor([len(ids) for ids in rows.columns["input_ids"]]).argsort(stable=True).tolist()
        else:
            order = list(range(len(rows)))
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        return cls([rows.batch(chunk, arch.pad_id, device) for chunk in chunks], order)

    def __len__(self) -> int:
        return len(self.order)

    @torch.inference_mode()
    def example_losses(self, model, arch: Arch, device: torch.device, dtype: str = "float32") -> torch.Tensor:
        """Every example's loss (float64, in dataset order); also kept as ``self.last``, so that the
        per-example losses of the last evaluation of an unlearning run can be read after it."""
        with autocast(device, dtype):
            losses = [example_losses(model, batch, arch).double().cpu() for batch in self.batches]
        self.last = _in_dataset_order(losses, self.order)
        return self.last

    def loss(self, model, arch: Arch, device: torch.device, dtype: str = "float32") -> float:
        """Mean example loss (DESIGN §2), equal to ``losses.dataset_loss`` on the same set.

        The mean of a permutation of the per-example losses: summed in float64 as there.
        dataset_loss averages in dataset order; the sum of float64 values of ~1e0 in another order
        can differ in the last bit, so the mean is taken in that order (``example_losses``).
        """
        return self.example_losses(model, arch, device, dtype).mean().item()


def _in_dataset_order(parts: list[torch.Tensor], order: list[int]) -> torch.Tensor:
    out = torch.empty(len(order), dtype=torch.float64)
    out[order] = torch.cat(parts)
    return out


def fused_activations(model: torch.nn.Module) -> torch.nn.Module:
    """Swap HF's ``NewGELUActivation`` (the tanh GELU as five Python-level tensor ops) for the same
    function as one fused kernel (``gelu(approximate="tanh")``), in place.

    Measured on the issue's T5 (gated-gelu): the activation was ~1/4 of an evaluation's time. Same
    formula, different rounding: ~1e-7 relative in float32, ~1e-16 in float64 (tested).
    """
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
    return model
