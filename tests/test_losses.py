import math

import pytest
import torch
from transformers import ByT5Tokenizer

from untrac.config import ModelConfig
from untrac.data.collate import batches, encode_pairs
from untrac.losses import dataset_loss, example_losses
from untrac.models import build_model

TOK = ByT5Tokenizer()
PAIRS = [("What is two?", "2"), ("Say hello", "hello there"), ("x", "yz")]


@pytest.mark.parametrize("preset", ["t5_tiny", "opt_tiny"])
def test_example_loss_is_mean_target_nll(preset):
    cfg = ModelConfig(name=preset, arch="seq2seq" if preset == "t5_tiny" else "causal", d_model=16, num_layers=1,
                      num_heads=2, d_ff=32)
    model, arch = build_model(cfg, TOK, seed=0)
    model.eval()
    ds = encode_pairs(TOK, PAIRS, arch)
    batch = next(batches(ds, 3, arch.pad_id))
    losses = example_losses(model, batch, arch)
    # Reference: one example at a time, log-softmax by hand over its target positions only.
    for i, (prompt, target) in enumerate(PAIRS):
        single = next(batches(ds.select([i]), 1, arch.pad_id))
        with torch.no_grad():
            if arch.kind == "seq2seq":
                logits = model(input_ids=single["input_ids"], labels=single["labels"]).logits[0]
                targets = single["labels"][0]
            else:
                logits = model(input_ids=single["input_ids"]).logits[0, :-1]
                targets = single["labels"][0, 1:]
        keep = targets != -100
        nll = -torch.log_softmax(logits[keep], -1).gather(1, targets[keep, None]).mean()
        assert losses[i].item() == pytest.approx(nll.item(), rel=1e-5)
        expected_tokens = len(TOK(target, add_special_tokens=False).input_ids) + 1  # + EOS
        assert int(keep.sum()) == expected_tokens
    mean = dataset_loss(model, ds, arch, torch.device("cpu"), batch_size=2)
    assert mean == pytest.approx(losses.mean().item(), rel=1e-5) and math.isfinite(mean)
