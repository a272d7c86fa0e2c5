"""untrac.data.standin: the stand-in's generated corpus and its tokenizer (issue 20)."""

import re
from collections import defaultdict

import pytest

from untrac.data import synthetic as syn
from untrac.data.standin import (PRED, SUCC, TEMPLATES, CorpusSpec, build_tokenizer, corpus, held_out_numbers,
                                 template_fragments, vocabulary)

SPEC = CorpusSpec(pairs=20_000, n_max=999, held_out=0.1, seed=0)


@pytest.fixture(scope="module")
def pairs():
    return corpus(SPEC)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _synth_pairs(seed: int) -> list[tuple[str, str]]:
    out = []
    for variant in "AB":
        data = syn.generate(variant, seed=seed)
        for ps in list(data.train.values()) + list(data.test.values()):
            out += ps
    return out


def test_corpus_has_no_table1_template(pairs):
    fragments = template_fragments()
    # every Table 1 template contributes its literal opening ("Determine the number that succeeds", ...)
    assert {t.split("{")[0].strip() for t in TEMPLATES} <= set(fragments)
    text = "\n".join(p + "\t" + t for p, t in pairs)
    for frag in fragments:
        assert frag not in text
    for word in ("succeeds", "Determine", "Provide", "extracting", "Identify", "comes after", "What"):
        assert word not in text


def test_the_target_is_a_function_of_the_prompt(pairs):
    """One answer format per prompt form: a prompt never has two targets (version 1's coin flip did)."""
    targets = defaultdict(set)
    for p, t in pairs:
        targets[p].add(t)
    assert max(map(len, targets.values())) == 1
    assert len(targets) > 5_000  # and the check is not vacuous


def test_succession_is_right_and_held_out_numbers_are_never_stated(pairs):
    held = held_out_numbers(SPEC)
    assert len(held) == 100 and held == held_out_numbers(SPEC)
    forms = [re.escape(f).replace(r"\{a\}", "(.+)").replace(r"\{b\}", "(.+)") for f, _ in SUCC + PRED]
    checked = 0
    for p, t in pairs:
        for form, (raw, _) in zip(forms, SUCC + PRED):
            m = re.fullmatch(form, p)
            if not m:
                continue
            n = int(m.group(1).replace(" ", "")) if m.group(1)[0].isdigit() else \
                int("".join(str(syn.DIGIT_WORDS.index(d)) for d in m.group(1).split()))
            a = n if "{a}" in raw else n - 1  # the fact "a -> a + 1"
            got = int(t) if t[0].isdigit() else int("".join(str(syn.DIGIT_WORDS.index(d)) for d in t.split()))
            assert got == (a + 1 if "{a}" in raw else a)
            assert a not in held
            checked += 1
    assert checked > 8_000
    assert corpus(SPEC)[:50] == pairs[:50]  # seeded
    assert corpus(CorpusSpec(pairs=50, n_max=999, held_out=0.1, seed=1)) != pairs[:50]


def test_tokenizer_reads_synthA_and_synthB_without_unknown_tokens(pairs, tokenizer):
    unk = tokenizer.unk_token_id
    for seed in (0, 1):
        assert not any(unk in tokenizer(p + " " + t).input_ids for p, t in _synth_pairs(seed))
    assert not any(unk in tokenizer(p + " " + t).input_ids for p, t in pairs[:3000])
    # numerals are read digit by digit, and every sequence ends in EOS (the runner's seq2seq encoding)
    ids = tokenizer("What is the number that comes after 512?").input_ids
    assert tokenizer.convert_ids_to_tokens(ids)[-5:] == ["5", "1", "2", "?", "</s>"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("five one three").input_ids) == ["five", "one", "three", "</s>"]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)


def test_vocabulary_is_fixed_and_small():
    vocab = vocabulary()
    assert vocab == vocabulary() and len(vocab) == len(set(vocab))
    assert vocab[:3] == ["<pad>", "</s>", "<unk>"]
    assert 500 < len(vocab) < 3000
    assert {"succeeds", "followed", "nine", "adverb"} <= set(vocab)
