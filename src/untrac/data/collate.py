"""Text pairs → token ids → padded batches, the same way for every stage.

A tokenised dataset is a ``datasets.Dataset`` with ``input_ids`` and, for pairs, ``labels``:
- seq2seq: ``input_ids`` = prompt (encoder), ``labels`` = target (decoder), both ending in EOS;
- causal: ``input_ids`` = BOS + prompt + target + EOS, ``labels`` = the same ids with the BOS and
  prompt positions set to -100, so only the target counts (DESIGN §2 "loss of an example");
- pretraining blocks have no ``labels`` column: every token counts.
"""

from typing import Iterator, Sequence

import datasets
import torch

from untrac.data import Pair

IGNORE = -100


def encode_pairs(tokenizer, pairs: Sequence[Pair], arch, max_length: int | None = None) -> datasets.Dataset:
    """Tokenise (prompt, target) pairs for ``arch`` (see module docstring)."""
    max_length = max_length or arch.max_length
    prompts = [p for p, _ in pairs]
    targets = [t for _, t in pairs]
    if arch.kind == "seq2seq":
        enc = tokenizer(prompts, truncation=True, max_length=max_length).input_ids
        dec = tokenizer(targets, truncation=True, max_length=max_length).input_ids
        return datasets.Dataset.from_dict({"input_ids": enc, "labels": dec})
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else arch.eos_id
    p_ids = tokenizer(prompts, add_special_tokens=False).input_ids
    t_ids = tokenizer(targets, add_special_tokens=False).input_ids
    inputs, labels = [], []
    for p, t in zip(p_ids, t_ids):
        ids = ([bos] + p + t + [arch.eos_id])[:max_length]
        lab = ([IGNORE] * (1 + len(p)) + t + [arch.eos_id])[:max_length]
        inputs.append(ids)
        labels.append(lab)
    return datasets.Dataset.from_dict({"input_ids": inputs, "labels": labels})


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def collate(columns: dict[str, list[list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad one batch given as columns (what ``Dataset.__getitem__`` returns for a list of indices)."""
    input_ids = _pad(columns["input_ids"], pad_id)
    mask = _pad([[1] * len(r) for r in columns["input_ids"]], 0)
    if "labels" in columns:
        labels = _pad(columns["labels"], IGNORE)
    else:
        labels = input_ids.masked_fill(mask == 0, IGNORE)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def batches(ds: datasets.Dataset, batch_size: int, pad_id: int, order: Sequence[int] | None = None,
            device: torch.device | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Consecutive batches of ``ds`` in ``order`` (default: dataset order), padded, on ``device``."""
    order = list(range(len(ds))) if order is None else list(order)
    for start in range(0, len(order), batch_size):
        batch = collate(ds[order[start:start + batch_size]], pad_id)
        yield {k: v.to(device) for k, v in batch.items()} if device is not None else batch
