"""Pretrain the stand-in (``model.pretrain``, ``model=t5_standin``; issue 20).

§5.1 finetunes a *pretrained* T5-XL: it already knows that "fifty-seven" and "57" are one number
and what follows it, so the successor task learned in one answer format carries to the other, and
the ground truth ranks both datasets of the test's task (1 and 2) above the other task's (3, 4).
A randomly initialised tiny T5 cannot carry a task across formats. The stand-in is that tiny T5
pretrained once on ``untrac.data.standin``'s generated knowledge (no Table 1 template), so that the
cpu-scale experiment asks the paper's question. ``untrac.store.ModelStore.fresh`` builds it once
per recipe (a cache entry keyed by the whole model config) and starts every finetuning from it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from untrac.config import ModelConfig
from untrac.data import synthetic as syn
from untrac.data.collate import encode_pairs
from untrac.data.standin import CorpusSpec, corpus, held_out_numbers
from untrac.models import build_model
from untrac.pretrain_config import PretrainConfig
from untrac.train import TrainRun, train


def lr_factor(pre: PretrainConfig) -> Callable[[int], float]:
    """Linear warm-up over ``pre.warmup`` steps, then a linear decay that would reach ``pre.min_lr_frac``
    at step ``pre.steps``: the usual pretraining schedule (the finetuning of §5 keeps its constant rate)."""
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(pre.warmup, 1))
        return warm * max(pre.min_lr_frac, 1 - (1 - pre.min_lr_frac) * step / pre.steps)
    return factor


def corpus_spec(pre: PretrainConfig) -> CorpusSpec:
    return CorpusSpec(pairs=pre.pairs, n_max=pre.n_max, held_out=pre.held_out, seed=pre.seed)


@contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """One torch thread on the CPU, for the block. A CPU matmul's sums depend on how many threads split
    them, and the stand-in's finetuned behaviour on the last bits of its weights: seed 0 pretrained on one
    and on two threads part at step 8 (losses by 4e-6), end with weights up to 0.23 apart, and the latter's
    ground truth has another shape (docs/results.md, "Issue 20, fourth session"). Two one-thread builds are
    bitwise equal, so the entry is the same on any number of cores; it costs 1,170 s against 730 s on two."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pretrain(cfg: ModelConfig, tokenizer, device: torch.device) -> tuple[torch.nn.Module, list[float]]:
    """The stand-in: ``cfg``'s tiny T5 from random weights (seed ``cfg.pretrain.seed``), trained on one
    thread (``one_thread``) on the generated corpus with AdamW and ``lr_factor``'s schedule; returns it with
    its step losses."""
    with one_thread(device):
        return _pretrain(cfg, tokenizer, device)


def _pretrain(cfg: ModelConfig, tokenizer, device: torch.device) -> tuple[torch.nn.Module, list[float]]:
    pre = cfg.pretrain
    model, arch = build_model(cfg, tokenizer, pre.seed)
    pool = encode_pairs(tokenizer, corpus(corpus_spec(pre)), arch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=pre.lr, weight_decay=pre.weight_decay)
    run = TrainRun(pre.steps, pre.batch_size, pre.seed, cfg.dtype, name="the stand-in", desc="pretrain stand-in",
                   lr_factor=lr_factor(pre), lr_key="model.pretrain.lr")
    return model, train(model, arch, pool, optimizer, device, run)


def probes(pre: PretrainConfig) -> dict[str, list[tuple[str, str]]]:
    """Succession facts the corpus never states (its held-out numbers), in the corpus's own forms: what
    the stand-in learned rather than stored; and, for comparison, the spelling of those numbers, which
    the corpus does state."""
    w = syn.number_in_words
    held = sorted(x for x in held_out_numbers(corpus_spec(pre)) if x < pre.n_max)
    return {"successor, numerals": [(f"{x} is followed by", str(x + 1)) for x in held],
            "successor, words": [(f"{w(x)} is followed by", w(x + 1)) for x in held],
            "successor, words to numerals": [(f"next number after {w(x)} in digits", str(x + 1)) for x in held],
            "successor, numerals to words": [(f"the successor of {x} , spelled out", w(x + 1)) for x in held],
            "spelling": [(f"spell {x} digit by digit", w(x)) for x in held]}


@torch.no_grad()
def knowledge(model: torch.nn.Module, tokenizer, pre: PretrainConfig, batch_size: int = 128) -> dict[str, float]:
    """Greedy exact-match accuracy of ``model`` on each of ``probes``."""
    model.eval()
    device = next(model.parameters()).device
    accuracy = {}
    for name, pairs in probes(pre).items():
        if not pairs:  # held_out=0: nothing held out, nothing to probe
            continue
        right = 0
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            batch = tokenizer([p for p, _ in chunk], return_tensors="pt", padding=True).to(device)
            out = model.generate(**batch, max_new_tokens=16, do_sample=False, num_beams=1)
            got = tokenizer.batch_decode(out, skip_special_tokens=True)
            want = tokenizer.batch_decode(tokenizer([t for _, t in chunk]).input_ids, skip_special_tokens=True)
            right += sum(g.strip() == t.strip() for g, t in zip(got, want))
        accuracy[name] = round(right / len(pairs), 3)
    return accuracy
