import torch

from untrac.data.collate import IGNORE, collate, encode_pairs
from untrac.models import Arch
from transformers import ByT5Tokenizer

TOK = ByT5Tokenizer()


def test_seq2seq_keeps_prompt_and_target_apart():
    ds = encode_pairs(TOK, [("ab", "c")], Arch("seq2seq", pad_id=0, eos_id=1, max_length=64))
    assert ds[0]["input_ids"] == TOK("ab").input_ids and ds[0]["labels"] == TOK("c").input_ids


def test_causal_masks_the_prompt():
    arch = Arch("causal", pad_id=0, eos_id=1, max_length=64)
    row = encode_pairs(TOK, [("ab", "cd")], arch)[0]
    prompt, target = TOK("ab", add_special_tokens=False).input_ids, TOK("cd", add_special_tokens=False).input_ids
    assert row["input_ids"] == [1] + prompt + target + [1]
    assert row["labels"] == [IGNORE] * 3 + target + [1]


def test_collate_pads_and_blocks_count_every_token():
    batch = collate({"input_ids": [[5, 6, 7], [8]], "labels": [[5, 6], [9]]}, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6], [9, IGNORE]]
    blocks = collate({"input_ids": [[5, 6], [7, 8]]}, pad_id=0)
    assert torch.equal(blocks["labels"], blocks["input_ids"])
