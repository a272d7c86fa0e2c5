"""scripts/standin.py (issue 20 probe): the cheap checks of the pretrained stand-in's recipe.

The script lives outside the package, so it is loaded from its file with importlib. Its corpus is
generated small here (the real one is RECIPE["corpus"] pairs); training is not run.
"""

import importlib.util
from pathlib import Path

import pytest

from untrac.data import synthetic as syn

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "standin.py"


@pytest.fixture(scope="module")
def standin():
    spec = importlib.util.spec_from_file_location("standin", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small(standin):
    recipe = dict(standin.RECIPE, corpus=20_000)
    pairs = standin.corpus(recipe)
    return recipe, pairs, standin.build_tokenizer(standin.vocabulary_texts(pairs, min_count=20))


def test_corpus_has_no_table1_template(standin, small):
    _, pairs, _ = small
    fragments = standin.template_fragments()
    # every Table 1 template contributes its literal opening ("Determine the number that succeeds", ...)
    assert {t.split("{")[0].strip() for t in standin.TEMPLATES} <= set(fragments)
    text = "\n".join(p + "\t" + t for p, t in pairs)
    for frag in fragments:
        assert frag not in text
    for word in ("succeeds", "Determine", "Provide", "extracting", "Identify"):
        assert word not in text


def test_corpus_is_seeded_and_holds_out_succession(standin, small):
    recipe, pairs, _ = small
    assert standin.corpus(recipe)[:50] == pairs[:50]
    held = standin.held_out_numbers(recipe)
    for x in sorted(held)[:20]:
        assert not any(p == f"{x} is followed by" for p, _ in pairs)


def test_tokenizer_has_no_unknown_token_on_synthA_and_synthB(standin, small):
    _, pairs, tok = small
    assert standin.unknown_tokens(tok, standin.synth_pairs(seed=0)) == 0
    assert standin.unknown_tokens(tok, standin.synth_pairs(seed=1)) == 0
    assert standin.unknown_tokens(tok, pairs[:2000]) == 0
    # numerals are read digit by digit, and every sequence ends in EOS (the runner's seq2seq encoding)
    ids = tok("What is the number that comes after 512?").input_ids
    assert tok.convert_ids_to_tokens(ids)[-5:] == ["5", "1", "2", "?", "</s>"]
    assert syn.number_in_words(513).split() == tok.convert_ids_to_tokens(tok("five one three").input_ids)[:-1]


def test_recipe_hash_changes_with_the_recipe(standin):
    base = standin.recipe_hash(standin.RECIPE)
    assert base == standin.recipe_hash(dict(reversed(list(standin.RECIPE.items()))))
    assert len(base) == 8
    for key, value in (("steps", 1), ("lr", 3e-4), ("seed", 1), ("corpus", 10)):
        assert standin.recipe_hash(dict(standin.RECIPE, **{key: value})) != base
