"""Synthetic datasets A and B (paper Table 1): generation, the word list, the official CSVs."""

import re
import string
from pathlib import Path

import pytest

from untrac.data.synthetic import (
    DIGIT_WORDS,
    POS_TAGS,
    generate,
    load_csv,
    number_in_words,
    word_list,
)
from untrac.errors import UntracError

# tests/data/test_synthetic.py -> parents[2] is the repo root; shared/ is its sibling.
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
OFFICIAL = SHARED / "untrac-synthetic"
needs_shared = pytest.mark.skipif(
    not OFFICIAL.exists(), reason="../shared/data is absent: official synthetic CSVs unavailable"
)

TRAIN_KEYS = ["dataset1", "dataset2", "dataset3", "dataset4"]
POS_ANSWERS = {"dataset3": dict(zip(POS_TAGS, "abcd")), "dataset4": dict(zip(POS_TAGS, "0123"))}
# The targets each set may have (SOURCES.md section 1), for the word and string tasks.
ANSWER_RANGE = {
    ("A", "dataset3"): {str(k) for k in range(4, 15)},
    ("A", "dataset4"): {number_in_words(k) for k in range(4, 15)},
    ("B", "dataset1"): set("abcdefghijklm"),
    ("B", "dataset2"): set(string.digits),
    ("B", "dataset3"): {"a", "b"},
    ("B", "dataset4"): {"2", "3"},
    ("B", "test"): set(string.ascii_lowercase),
}


def words_to_number(text: str) -> int:
    return int("".join(str(DIGIT_WORDS.index(w)) for w in text.split()))


def quoted(prompt: str) -> list[str]:
    return re.findall(r"'([^']*)'", prompt)


def template(prompt: str) -> str:
    """The prompt with its variable parts (quoted strings, numbers) replaced by placeholders."""
    prompt = re.sub(r"'[^']*'", "'{}'", prompt)
    prompt = re.sub(r"succeeds [a-z ]+\.", "succeeds {}.", prompt)
    return re.sub(r"after \d+\?", "after {}?", prompt)


@pytest.fixture(scope="module")
def generated():
    return {v: generate(v, seed=0) for v in "AB"}


@pytest.fixture(scope="module")
def official():
    return {v: load_csv(v, OFFICIAL) for v in "AB"}


@pytest.mark.parametrize(
    "n, words",
    [(0, "zero"), (10, "one zero"), (14, "one four"), (510, "five one zero"), (512, "five one two")],
)
def test_number_in_words(n, words):
    assert number_in_words(n) == words
    assert words_to_number(words) == n


def test_word_list_is_clean_and_large_enough():
    words = word_list()
    assert list(words) == list(POS_TAGS)
    every = [w for ws in words.values() for w in ws]
    assert len(every) == len(set(every)), "a word has more than one part of speech"
    assert all(re.fullmatch(r"[a-z]+", w) for w in every)
    counts = {pos: len(ws) for pos, ws in words.items()}
    assert counts["noun"] >= 140 and counts["verb"] >= 130
    assert counts["adjective"] >= 130 and counts["adverb"] >= 140
    lengths = {len(w) for w in every if 4 <= len(w) <= 14}
    assert lengths == set(range(4, 15))
    assert sum(4 <= len(w) <= 14 for w in every) >= 600


@pytest.mark.parametrize("variant", ["A", "B"])
def test_structure(generated, variant):
    data = generated[variant]
    assert list(data.train) == TRAIN_KEYS and list(data.test) == ["test"]
    for pairs in [*data.train.values(), data.test["test"]]:
        assert len(pairs) == 256
        assert len({p for p, _ in pairs}) == 256, "examples repeat"
        assert all(isinstance(p, str) and isinstance(t, str) and t for p, t in pairs)


@pytest.mark.parametrize("variant", ["A", "B"])
def test_seed_determinism(generated, variant):
    assert generate(variant, seed=0) == generated[variant]
    other = generate(variant, seed=1)
    for key in ["dataset3", "dataset4"] + (["dataset1", "dataset2"] if variant == "B" else []):
        assert other.train[key] != generated[variant].train[key], key
    if variant == "B":
        assert other.test != generated[variant].test


def test_size_and_variant_arguments():
    small = generate("A", n=8)
    assert [len(small.train[k]) for k in TRAIN_KEYS] == [8] * 4 and len(small.test["test"]) == 8
    assert small.test["test"][0] == ("What is the number that comes after 16?", "17")
    with pytest.raises(UntracError, match="'C'"):
        generate("C")


def test_dataset_a_answers_are_correct(generated):
    data = generated["A"]
    for key, numerals in [("dataset1", True), ("dataset2", False)]:
        for prompt, target in data.train[key]:
            x = words_to_number(re.search(r"succeeds ([a-z ]+)\.", prompt).group(1))
            assert target == (str(x + 1) if numerals else number_in_words(x + 1))
            assert x % 2 == (0 if numerals else 1)
    words = {}
    for key, numerals in [("dataset3", True), ("dataset4", False)]:
        words[key] = [quoted(p)[0] for p, _ in data.train[key]]
        for (prompt, target), word in zip(data.train[key], words[key]):
            assert 4 <= len(word) <= 14
            assert target == (str(len(word)) if numerals else number_in_words(len(word)))
    assert not set(words["dataset3"]) & set(words["dataset4"])
    assert len(set(words["dataset3"]) | set(words["dataset4"])) == 512
    for prompt, target in data.test["test"]:
        assert int(target) == int(re.search(r"after (\d+)\?", prompt).group(1)) + 1


def test_dataset_b_answers_are_correct(generated):
    data = generated["B"]
    removal = {k: data.train[k] for k in ["dataset1", "dataset2"]} | {"test": data.test["test"]}
    for key, pairs in removal.items():
        for prompt, target in pairs:
            if key == "test":
                s, *removed = quoted(prompt)
            else:
                *removed, s = quoted(prompt)
            assert len(s) == 5 == len(set(s)) and len(removed) == 4
            assert sorted(removed + [target]) == sorted(s)
            assert target in ANSWER_RANGE[("B", key)]
            if key == "dataset1":
                assert all(c.isdigit() for c in removed)
    pos_of = {w: pos for pos, ws in word_list().items() for w in ws}
    for key in ["dataset3", "dataset4"]:
        answers = POS_ANSWERS[key]
        words = [quoted(p)[0] for p, _ in data.train[key]]
        assert len(set(words)) == 256
        assert [t for _, t in data.train[key]] == [answers[pos_of[w]] for w in words]
    mix3 = sum(t == "a" for _, t in data.train["dataset3"])
    mix4 = sum(t == "2" for _, t in data.train["dataset4"])
    assert (mix3, mix4) == (134, 123)  # the official label mix


@needs_shared
def test_dataset_a_fixed_sets_equal_official_rows(generated, official):
    for key in ["dataset1", "dataset2"]:
        assert generated["A"].train[key] == official["A"].train[key]
    assert generated["A"].test == official["A"].test


@needs_shared
@pytest.mark.parametrize("variant", ["A", "B"])
def test_templates_and_answer_ranges_match_official(generated, official, variant):
    gen, off = generated[variant], official[variant]
    assert list(off.train) == TRAIN_KEYS and list(off.test) == ["test"]
    for key in [*TRAIN_KEYS, "test"]:
        gen_pairs = gen.test["test"] if key == "test" else gen.train[key]
        off_pairs = off.test["test"] if key == "test" else off.train[key]
        assert len(off_pairs) == 256
        assert {template(p) for p, _ in gen_pairs} == {template(p) for p, _ in off_pairs}, key
        gen_targets, off_targets = {t for _, t in gen_pairs}, {t for _, t in off_pairs}
        if (variant, key) in ANSWER_RANGE:
            assert off_targets <= ANSWER_RANGE[(variant, key)], key
            assert gen_targets == off_targets, key


def test_load_csv_missing_file(tmp_path):
    with pytest.raises(UntracError, match="synthetic_train00_dataset.csv") as err:
        load_csv("A", tmp_path)
    assert "not found" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "content, problem",
    [
        ("inputs_pretokenized,dataset\nq,dataset1\n", "targets_pretokenized"),
        ("", "empty"),
        ("inputs_pretokenized,targets_pretokenized,dataset\n", "no rows"),
    ],
)
def test_load_csv_bad_file(tmp_path, content, problem):
    header = "inputs_pretokenized,targets_pretokenized,dataset\n"
    (tmp_path / "synthetic_train10_dataset.csv").write_text(header + "q,a,dataset1\n")
    (tmp_path / "synthetic_eval10_dataset.csv").write_text(content)
    with pytest.raises(UntracError, match="synthetic_eval10_dataset.csv") as err:
        load_csv("B", tmp_path)
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_load_csv_keeps_strings(tmp_path):
    header = "inputs_pretokenized,targets_pretokenized,dataset\n"
    (tmp_path / "synthetic_train00_dataset.csv").write_text(
        header + "x,1,dataset1\ny,NA,dataset2\nz,10,dataset1\n"
    )
    (tmp_path / "synthetic_eval00_dataset.csv").write_text(header + "w,513,dataset0\n")
    data = load_csv("A", tmp_path)
    assert data.train == {"dataset1": [("x", "1"), ("z", "10")], "dataset2": [("y", "NA")]}
    assert data.test == {"test": [("w", "513")]}
