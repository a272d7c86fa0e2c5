"""Text pairs → token ids → padded batches, the same way for every stage.

A tokenised dataset is a ``datasets.Dataset`` with ``input_ids`` and, for pairs, ``labels``:
- seq2seq: ``input_ids`` = prompt (encoder), ``labels`` = target (decoder), both ending in EOS;
- causal: ``input_ids`` = BOS + tokens of the joined text prompt + target + EOS, ``labels`` = the
  same ids with the BOS and prompt positions set to -100, so only the target counts (DESIGN §2
  "loss of an example"). The joined text is tokenised once, as the model reads it: tokenising
  prompt and target apart would give a BPE tokenizer a lone space token ('?', 'Ġ', 'You' instead
  of '?', 'ĠYou' for TruthfulQA's "question " + "answer");
- causal text rows of your own files (``encode_texts``): ("", text) as above, a row longer than the
  context cut into chunks within the row;
- pretraining blocks have no ``labels`` column: every token counts.

``separator`` (``data.separator`` / ``testset.separator`` of your own files) goes between a non-empty
prompt and its target of a causal model, and counts as the prompt. The presets (synthetic, pile8,
the paper's test sets) pass "", so their tokens, cached models and results stay what they were.
"""

from typing import Iterator, Sequence

import datasets
import torch

from untrac.data import Pair
from untrac.errors import UntracError

IGNORE = -100


def encode_pairs(tokenizer, pairs: Sequence[Pair], arch, max_length: int | None = None,
                 separator: str = "") -> datasets.Dataset:
    """Tokenise (prompt, target) pairs for ``arch`` (see module docstring); a longer pair is cut at
    ``max_length`` tokens (the model's positions by default), its target's tail unscored."""
    max_length = max_length or arch.max_length
    prompts = [p for p, _ in pairs]
    targets = [t for _, t in pairs]
    if arch.kind == "seq2seq":
        enc = tokenizer(prompts, truncation=True, max_length=max_length).input_ids
        dec = tokenizer(targets, truncation=True, max_length=max_length).input_ids
        return datasets.Dataset.from_dict({"input_ids": enc, "labels": dec})
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else arch.eos_id
    inputs, labels = [], []
    for ids, n_prompt in _joined(tokenizer, [p + separator if p else p for p in prompts], targets):
        inputs.append(([bos] + ids + [arch.eos_id])[:max_length])
        labels.append(([IGNORE] * (1 + n_prompt) + ids[n_prompt:] + [arch.eos_id])[:max_length])
    return datasets.Dataset.from_dict({"input_ids": inputs, "labels": labels})


def encode_texts(tokenizer, texts: Sequence[str], arch, max_length: int) -> tuple[dict[str, list], list[int]]:
    """Causal text rows as examples, every token counting: (columns, index of each example's text).

    A row of at most ``max_length`` tokens (BOS and EOS included) is one example, exactly
    ``encode_pairs``' ("", text). A longer row is cut within the row into windows of ``max_length``
    that overlap by one token (the strided window of transformers' "Perplexity of fixed-length
    models" with stride ``max_length - 1``): every token but the BOS is predicted exactly once, and
    from a token before it; rows are never joined, so each example belongs to one row."""
    if max_length < 2:
        raise UntracError(f"max_length={max_length}: a causal example needs at least 2 tokens")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else arch.eos_id
    inputs, labels, owners = [], [], []
    for index, (ids, _) in enumerate(_joined(tokenizer, [""] * len(texts), list(texts))):
        tokens = [bos] + ids + [arch.eos_id]
        for start in range(0, len(tokens) - 1, max_length - 1):
            window = tokens[start:start + max_length]
            inputs.append(window)
            labels.append([IGNORE] + window[1:])  # position 0 is context only (predicted in the window before)
            owners.append(index)
    return {"input_ids": inputs, "labels": labels}, owners


def _joined(tokenizer, prompts: list[str], targets: list[str]) -> list[tuple[list[int], int]]:
    """Token ids of each prompt + target, and how many leading tokens belong to the prompt.

    A fast tokenizer gives character offsets: a token is the prompt's when it ends within the
    prompt, so a token that spans the boundary (BPE 'ĠYou' after "question ") is the target's.
    A slow tokenizer has no offsets; prompt and target tokenised apart are used when, together,
    they are exactly the joined text's tokens (always so for byte tokenizers such as ByT5).
    """
    texts = [p + t for p, t in zip(prompts, targets)]
    if tokenizer.is_fast:
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        out = []
        for ids, offsets, prompt in zip(enc.input_ids, enc.offset_mapping, prompts):
            n_prompt = next((i for i, (_, end) in enumerate(offsets) if end > len(prompt)), len(ids))
            out.append((ids, n_prompt))
        return out
    joined = tokenizer(texts, add_special_tokens=False).input_ids
    p_ids = tokenizer(prompts, add_special_tokens=False).input_ids
    t_ids = tokenizer(targets, add_special_tokens=False).input_ids
    for ids, p, t, text in zip(joined, p_ids, t_ids, texts):
        if ids != p + t:
            raise UntracError(f"tokenizer {type(tokenizer).__name__} has no character offsets (not a fast "
                              f"tokenizer) and splits {text[:40]!r} differently from its prompt and target "
                              "apart; use a fast tokenizer (model.tokenizer=<hub id or folder>)")
    return [(ids, len(p)) for ids, p in zip(joined, p_ids)]


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
