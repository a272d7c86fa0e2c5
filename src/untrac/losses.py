"""Per-example losses (DESIGN §2): mean token negative log-likelihood over the target tokens."""

import datasets
import torch
import torch.nn.functional as F

from untrac.data.collate import IGNORE, batches
from untrac.models import Arch, autocast


def token_logits(model, batch: dict[str, torch.Tensor], arch: Arch) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[batch, length, vocab]`` aligned with the target tokens ``[batch, length]`` they score
    (``IGNORE`` where nothing is predicted); logits at least float32.

    Shared by the loss, HIF's Gauss–Newton operator and EK-FAC's sampled Fisher, which need the logits."""
    labels = batch["labels"]
    if arch.kind == "seq2seq":
        decoder_inputs = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=decoder_inputs).logits
        targets = labels
    else:
        # A causal LM predicts token t+1 from the prefix up to t.
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = labels[:, 1:]
    # At least float32 for the log-softmax (bf16 logits), float64 kept for exact tests.
    return logits.to(torch.promote_types(logits.dtype, torch.float32)), targets


def example_losses(model, batch: dict[str, torch.Tensor], arch: Arch) -> torch.Tensor:
    """Loss of each example in ``batch``: mean NLL of its target tokens, shape ``[batch]``."""
    logits, targets = token_logits(model, batch, arch)
    nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
    counted = (targets != IGNORE).sum(dim=1).clamp(min=1)
    return nll.sum(dim=1) / counted


def batch_loss(model, batch: dict[str, torch.Tensor], arch: Arch) -> torch.Tensor:
    """Loss of a batch = mean over its examples (so batch size does not rescale the step)."""
    return example_losses(model, batch, arch).mean()


@torch.no_grad()
def per_example_losses(model, ds: datasets.Dataset, arch: Arch, device: torch.device, batch_size: int = 64,
                       dtype: str = "float32") -> torch.Tensor:
    """Every example's loss, in dataset order (float64 on the CPU)."""
    was_training = model.training
    model.eval()
    # Length-sorted batches waste little on padding; results go back to dataset order.
    # (Pretraining blocks, without labels, all have one length: no need to read them.)
    if "labels" in ds.column_names:
        order = torch.tensor([len(ids) for ids in ds["input_ids"]]).argsort(stable=True).tolist()
    else:
        order = list(range(len(ds)))
    out = []
    with autocast(device, dtype):
        for batch in batches(ds, batch_size, arch.pad_id, order=order, device=device):
            out.append(example_losses(model, batch, arch).double().cpu())
    model.train(was_training)
    losses = torch.empty(len(order), dtype=torch.float64)
    losses[order] = torch.cat(out)
    return losses


def dataset_loss(model, ds: datasets.Dataset, arch: Arch, device: torch.device, batch_size: int = 64,
                 dtype: str = "float32") -> float:
    """Loss of a (sub)set = mean of its examples' losses (DESIGN §2)."""
    return per_example_losses(model, ds, arch, device, batch_size, dtype).mean().item()
