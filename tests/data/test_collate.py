import pytest
import torch

from untrac.data.collate import IGNORE, collate, encode_pairs
from untrac.errors import UntracError
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


# -- causal pairs with a BPE tokenizer: the joined text is tokenised once --------------------------
def _bpe(trim_offsets: bool):
    """A tiny byte-level BPE (GPT-2 / OPT style) trained here, offline, wrapped as transformers does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=trim_offsets)
    corpus = ["What happens if you crack your knuckles a lot? You may get arthritis.",
              "Why do veins appear blue? You see blue light.", "Who wins? You do, you know."] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>")


@pytest.mark.parametrize("trim_offsets", [True, False])
def test_causal_bpe_tokenises_the_joined_text_and_masks_the_prompt(trim_offsets):
    tok = _bpe(trim_offsets)
    prompt, target = "Why do veins appear blue? ", "You see blue light."  # TruthfulQA: question + " "
    # The old way, prompt apart, leaves the boundary space as a token of its own:
    assert tok.convert_ids_to_tokens(tok(prompt, add_special_tokens=False).input_ids)[-1] == "Ġ"
    arch = Arch("causal", pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_length=64)
    row = encode_pairs(tok, [(prompt, target)], arch)[0]
    joined = tok(prompt + target, add_special_tokens=False).input_ids
    assert row["input_ids"] == [tok.eos_token_id] + joined + [tok.eos_token_id]  # no BOS: EOS stands in
    tokens = tok.convert_ids_to_tokens(row["input_ids"])
    assert "Ġ" not in tokens and "ĠYou" in tokens
    n_masked = sum(label == IGNORE for label in row["labels"])
    assert row["labels"][:n_masked] == [IGNORE] * n_masked and IGNORE not in row["labels"][n_masked:]
    masked, scored = row["input_ids"][1:n_masked], row["labels"][n_masked:-1]
    assert masked + scored == joined
    assert tok.decode(masked) == prompt.rstrip()  # the masked positions are exactly the prompt ...
    assert tok.decode(scored) == " " + target  # ... and the target starts with 'ĠYou'
    assert tok.convert_ids_to_tokens(scored)[0] == "ĠYou"


def test_causal_bpe_empty_prompt_scores_every_token():
    tok = _bpe(True)
    arch = Arch("causal", pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_length=64)
    row = encode_pairs(tok, [("", "You see blue light.")], arch)[0]
    assert row["labels"][0] == IGNORE and IGNORE not in row["labels"][1:]


def test_causal_byt5_joined_equals_apart_even_for_multibyte_text():
    arch = Arch("causal", pad_id=0, eos_id=1, max_length=64)
    row = encode_pairs(TOK, [("Ünï? ", "cödé")], arch)[0]
    n_prompt = len("Ünï? ".encode())
    assert row["input_ids"][1:-1] == TOK("Ünï? cödé", add_special_tokens=False).input_ids
    assert row["labels"] == [IGNORE] * (1 + n_prompt) + TOK("cödé", add_special_tokens=False).input_ids + [1]


class _WordTokenizer:
    """A slow tokenizer without offsets that merges across the prompt/target boundary."""

    is_fast = False
    bos_token_id = None

    def __call__(self, texts, add_special_tokens=False):
        return type("Enc", (), {"input_ids": [[hash(w) % 1000 for w in t.split()] for t in texts]})()


def test_causal_slow_tokenizer_that_splits_differently_is_refused():
    arch = Arch("causal", pad_id=0, eos_id=1, max_length=64)
    with pytest.raises(UntracError, match="fast tokenizer"):
        encode_pairs(_WordTokenizer(), [("ab", "cd")], arch)  # "abcd" is one word, "ab" + "cd" two
