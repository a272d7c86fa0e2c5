"""The synthetic datasets A and B of the paper (Section 5.1, Table 1), generated offline.

Each dataset has one test set (task P, answer format P) and four training sets:
1 = task P / format P, 2 = task P / format Q, 3 = task Q / format P, 4 = task Q / format Q.

- A: P = successor of a number, Q = length of a word; format P = numerals, format Q = the
  number spelled digit by digit in words ("510" -> "five one zero").
- B: P = the character left after removing four, Q = part of speech of a word; format P = a
  letter, format Q = a digit.

The templates, value ranges and answer formats are those of the official CSVs of the
authors' repository (misonuma/untrac, folder synthetic/), as described in
shared/data/SOURCES.md section 1. ``load_csv`` reads those official files instead.
"""

from __future__ import annotations

import random
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

from untrac.data import Pair, TextData
from untrac.errors import UntracError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGITS = "0123456789"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Dataset B's training set 1 keeps a letter from the first half of the alphabet only (13
# distinct targets in the official CSV), so the test letters n-z never occur as its answers.
TRAIN_LETTERS = LETTERS[:13]
POS_TAGS = ("noun", "verb", "adjective", "adverb")
# Dataset A's length task: the official words are 4 to 14 letters long.
MIN_WORD_LEN, MAX_WORD_LEN = 4, 14
# Label mix of the official dataset B, out of 256: 134 nouns / 122 verbs in training set 3,
# 123 adjectives / 133 adverbs in training set 4. Kept as fractions so other sizes scale.
NOUN_SHARE, ADJECTIVE_SHARE = 134 / 256, 123 / 256

NUMERALS, IN_WORDS = "numerical form", "words"
SUCCESSOR = "Determine the number that succeeds {x}. Provide your answer in {fmt}."
LENGTH = "Determine the length of '{w}'. Provide your answer in {fmt}."
SUCCESSOR_TEST = "What is the number that comes after {x}?"
REMOVAL = "Identify the character left after removing {removed} from '{s}'."
REMOVAL_TEST = "What letter remains in '{s}' after extracting {removed}?"
# The space before each newline after "letter."/"number." and "Choices:" is in the originals.
POS_BY_LETTER = (
    "Identify the part of speech of '{w}'. Select your answer with the associated letter. \n"
    "Choices: \na. noun\nb. verb\nc. adjective\nd. adverb"
)
POS_BY_NUMBER = (
    "Identify the part of speech of '{w}'. Select your answer with the associated number. \n"
    "Choices: \n0. noun\n1. verb\n2. adjective\n3. adverb"
)
POS_LETTER_ANSWER = dict(zip(POS_TAGS, "abcd"))
POS_NUMBER_ANSWER = dict(zip(POS_TAGS, "0123"))

CSV_COLUMNS = ("inputs_pretokenized", "targets_pretokenized", "dataset")
CSV_FILES = {
    "A": ("synthetic_train00_dataset.csv", "synthetic_eval00_dataset.csv"),
    "B": ("synthetic_train10_dataset.csv", "synthetic_eval10_dataset.csv"),
}


def number_in_words(n: int) -> str:
    """Spell a non-negative integer digit by digit, as the answers "in words" of Table 1.

    >>> number_in_words(510)
    'five one zero'
    """
    if n < 0:
        raise ValueError(f"number_in_words takes a non-negative integer, got {n}")
    return " ".join(DIGIT_WORDS[int(d)] for d in str(n))


@lru_cache(maxsize=1)
def word_list() -> dict[str, tuple[str, ...]]:
    """The project's word list (``untrac/data/words.tsv``): part of speech -> its words."""
    text = resources.files("untrac.data").joinpath("words.tsv").read_text(encoding="utf-8")
    words: dict[str, list[str]] = {pos: [] for pos in POS_TAGS}
    for line in text.splitlines()[1:]:  # first line is the header
        if line.strip():
            word, pos = line.split("\t")
            words[pos].append(word)
    return {pos: tuple(ws) for pos, ws in words.items()}


def successor_pairs(numbers: list[int], in_words: bool) -> list[Pair]:
    """Dataset A, training sets 1-2: the number X in words -> X+1 (numerals or in words)."""
    fmt = IN_WORDS if in_words else NUMERALS
    return [
        (
            SUCCESSOR.format(x=number_in_words(x), fmt=fmt),
            number_in_words(x + 1) if in_words else str(x + 1),
        )
        for x in numbers
    ]


def length_pairs(words: list[str], in_words: bool) -> list[Pair]:
    """Dataset A, training sets 3-4: a word -> its length (numerals or in words)."""
    fmt = IN_WORDS if in_words else NUMERALS
    return [
        (LENGTH.format(w=w, fmt=fmt), number_in_words(len(w)) if in_words else str(len(w)))
        for w in words
    ]


def removal_pair(rng: random.Random, chars: list[str], keep: str, template: str) -> Pair:
    """Dataset B, removal task: remove every character but ``keep`` (listed in shuffled order)
    from the string ``chars``; the answer is ``keep``."""
    removed = [c for c in chars if c != keep]
    rng.shuffle(removed)
    quoted = ", ".join(f"'{c}'" for c in removed)
    return template.format(s="".join(chars), removed=quoted), keep


def _distinct(n: int, draw) -> list[Pair]:
    """Draw ``n`` pairs with distinct prompts; a random string may repeat, an example may not."""
    pairs: dict[str, str] = {}
    for _ in range(100 * n):  # bounded: a huge n could exceed the possible strings
        prompt, target = draw()
        pairs.setdefault(prompt, target)
        if len(pairs) == n:
            return list(pairs.items())
    raise UntracError(f"cannot draw {n} distinct synthetic examples; use a smaller n")


def part_of_speech_pairs(
    rng: random.Random,
    tags: tuple[str, str],
    first_share: float,
    n: int,
    template: str,
    answers: dict[str, str],
) -> list[Pair]:
    """Dataset B, training sets 3-4: ``n`` distinct words of two parts of speech -> their label."""
    n_first = round(n * first_share)
    counts = {tags[0]: n_first, tags[1]: n - n_first}
    words = word_list()
    for tag, count in counts.items():
        if count > len(words[tag]):
            raise UntracError(f"words.tsv has {len(words[tag])} {tag}s, {count} are needed")
    tagged = [(w, tag) for tag, count in counts.items() for w in rng.sample(words[tag], count)]
    rng.shuffle(tagged)
    return [(template.format(w=w), answers[tag]) for w, tag in tagged]


def dataset_a(rng: random.Random, n: int) -> TextData:
    """Synthetic dataset A (Table 1, top): successor (task P) and word length (task Q).

    Sets 1, 2 and the test set are fixed: even numbers 0..2n-2, odd numbers 1..2n-1, then
    2n..3n-1 for the test (with n = 256 exactly the official rows). Sets 3 and 4 draw 2n
    distinct words of 4-14 letters from the word list and split them in two.
    """
    pool = sorted(
        w for ws in word_list().values() for w in ws if MIN_WORD_LEN <= len(w) <= MAX_WORD_LEN
    )
    if 2 * n > len(pool):
        raise UntracError(f"words.tsv has {len(pool)} words of 4-14 letters, {2 * n} are needed")
    words = rng.sample(pool, 2 * n)
    train = {
        "dataset1": successor_pairs(list(range(0, 2 * n, 2)), in_words=False),
        "dataset2": successor_pairs(list(range(1, 2 * n, 2)), in_words=True),
        "dataset3": length_pairs(words[:n], in_words=False),
        "dataset4": length_pairs(words[n:], in_words=True),
    }
    test = [(SUCCESSOR_TEST.format(x=x), str(x + 1)) for x in range(2 * n, 3 * n)]
    return TextData(train=train, test={"test": test})


def dataset_b(rng: random.Random, n: int) -> TextData:
    """Synthetic dataset B (Table 1, bottom): character removal (task P), part of speech (Q).

    Set 1 keeps a letter a-m among four distinct digits, set 2 keeps one of five distinct
    digits, the test keeps one of five distinct letters a-z (with its own template). Sets 3
    and 4 label distinct nouns/verbs with a/b and adjectives/adverbs with 2/3.
    """

    def letter_among_digits() -> Pair:
        letter = rng.choice(TRAIN_LETTERS)
        chars = rng.sample(DIGITS, 4) + [letter]
        rng.shuffle(chars)
        return removal_pair(rng, chars, letter, REMOVAL)

    def digit_among_digits() -> Pair:
        chars = rng.sample(DIGITS, 5)
        return removal_pair(rng, chars, rng.choice(chars), REMOVAL)

    def letter_among_letters() -> Pair:
        chars = rng.sample(LETTERS, 5)
        return removal_pair(rng, chars, rng.choice(chars), REMOVAL_TEST)

    train = {
        "dataset1": _distinct(n, letter_among_digits),
        "dataset2": _distinct(n, digit_among_digits),
        "dataset3": part_of_speech_pairs(
            rng, ("noun", "verb"), NOUN_SHARE, n, POS_BY_LETTER, POS_LETTER_ANSWER
        ),
        "dataset4": part_of_speech_pairs(
            rng, ("adjective", "adverb"), ADJECTIVE_SHARE, n, POS_BY_NUMBER, POS_NUMBER_ANSWER
        ),
    }
    return TextData(train=train, test={"test": _distinct(n, letter_among_letters)})


def generate(variant: str, seed: int = 0, n: int = 256) -> TextData:
    """Synthetic dataset ``variant`` ("A" or "B") of Table 1: four training sets
    (``dataset1``..``dataset4``) and one test set (``test``) of ``n`` examples each (paper: 256).

    The same seed gives the same data; the seed only varies the sampled words and strings.
    """
    if variant not in CSV_FILES:
        raise UntracError(f"synthetic dataset variant must be 'A' or 'B', got {variant!r}")
    if n < 1:
        raise UntracError(f"synthetic dataset size n must be positive, got {n}")
    rng = random.Random(seed)
    return dataset_a(rng, n) if variant == "A" else dataset_b(rng, n)


def _read_official(path: Path) -> pd.DataFrame:
    """One official CSV as strings, or an UntracError naming the file and what is wrong."""
    try:
        # Targets must stay the strings written: "1" not 1, and no word read as a missing value.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise UntracError(f"{path}: file not found (official synthetic CSV)") from None
    except pd.errors.EmptyDataError:
        raise UntracError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UntracError(f"{path}: not a readable CSV ({reason})") from None
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise UntracError(
            f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(CSV_COLUMNS)})"
        )
    if frame.empty:
        raise UntracError(f"{path}: no rows under the header")
    return frame


def _pairs(frame: pd.DataFrame) -> list[Pair]:
    return list(zip(frame["inputs_pretokenized"], frame["targets_pretokenized"]))


def load_csv(variant: str, root: str | Path) -> TextData:
    """The official CSVs of synthetic dataset ``variant`` ("A" or "B") from folder ``root``.

    Training rows are grouped by their ``dataset`` column (in order of appearance); every test
    row (labelled ``dataset0`` in the files) goes under ``test``.
    """
    if variant not in CSV_FILES:
        raise UntracError(f"synthetic dataset variant must be 'A' or 'B', got {variant!r}")
    train_name, eval_name = CSV_FILES[variant]
    train_frame = _read_official(Path(root) / train_name)
    test_frame = _read_official(Path(root) / eval_name)
    train = {
        str(name): _pairs(group) for name, group in train_frame.groupby("dataset", sort=False)
    }
    return TextData(train=train, test={"test": _pairs(test_frame)})
