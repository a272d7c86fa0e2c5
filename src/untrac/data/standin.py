"""The corpus and tokenizer of the pretrained stand-in (``model=t5_standin``, issue 20).

The paper finetunes a *pretrained* T5, which already relates "57" to "five seven" and knows what
comes after a number; a randomly initialised tiny T5 learns answer formats but cannot carry the
successor task across them. The stand-in is a tiny T5 pretrained once on the text generated here:
the world knowledge synthA/synthB rely on, in many surface forms, and **no Table 1 template**
(``template_fragments``; asserted), so the finetuning datasets still decide the test behaviour.

- numbers 0..``n_max``: numeral <-> digit-by-digit words (``synthetic.number_in_words``);
  successor and predecessor, in numerals, words and across them. Each prompt form fixes its answer
  format (the same as its number, or named: "in digits", "spelled out"), so the target is a
  function of the prompt: a second pretraining seed learns the same facts, not another coin flip.
  The succession facts of a seeded ``held_out`` share of the numbers are left out, to measure
  what was learned rather than stored (``untrac.pretrain.knowledge``).
- words (the project's word list): spelling letter by letter, length in numerals or in words.
- short strings of letters and digits: the one character left when the others are taken out.

The tokenizer is WordPiece over a fixed vocabulary (every word of these forms, of Table 1's
templates, of the word list, the digit words and single characters with ``##`` continuations),
digits split one by one: it needs no files and reads synthA/synthB without an unknown token.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from dataclasses import dataclass

from untrac.data import Pair
from untrac.data import synthetic as syn

SPECIALS = ("<pad>", "</s>", "<unk>")
TEMPLATES = (syn.SUCCESSOR, syn.LENGTH, syn.SUCCESSOR_TEST, syn.REMOVAL, syn.REMOVAL_TEST,
             syn.POS_BY_LETTER, syn.POS_BY_NUMBER)
# Bump when the generated text changes: every key of a stand-in and of the models finetuned from it holds it
# (untrac.models.model_key). 1 was scripts/standin.py's probe (a coin-flip answer format per prompt); 2 had
# a fixed answer format per form. A version 3 without the words of the test's question ("after",
# "comes", "number"), so that the stand-in cannot answer it zero-shot, was measured and gave the random model's
# shape back (dataset 1 with 66-74 % of the variance on synthA). 4 is this text: 2 with one rule for the answer
# format, so that the test's question has one reading -- a form that names no format answers in its number's.
# docs/results.md, issue 20.
CORPUS_VERSION = 4
SAME, NUM, WORDS = "same", "num", "words"  # a form's answer format: its number's, numerals, words
SPELL = (("spell {n} digit by digit", WORDS), ("{n} in words :", WORDS), ("say the digits of {n}", WORDS),
         ("write {w} with digits", NUM), ("{w} as a numeral :", NUM), ("digits for {w} ?", NUM))
SUCC = (("{a} is followed by", SAME), ("count on from {a} :", SAME), ("after {a} we say", SAME),
        ("next number after {a} in digits", NUM), ("one more than {a} is", SAME), ("{a} plus one =", SAME),
        ("the successor of {a} , spelled out", WORDS), ("{a} , then", SAME))
PRED = (("{b} comes just after", SAME), ("one less than {b} is", SAME), ("{b} minus one =", SAME))
LENGTH = (("how many letters does '{x}' have ?", NUM), ("count the letters in {x} , in words", WORDS),
          ("the word {x} is this long :", NUM), ("letters in the word {x} , spelled out ?", WORDS))
ODD = ("take {gone} out of {s} and keep", "'{s}' without {gone} is", "drop {gone} from '{s}' :",
       "which character of {s} is not among {gone} ?")
LETTER_SPELL = "spell {x} letter by letter"


@dataclass(frozen=True)
class CorpusSpec:
    """How many pairs, which numbers, which share of succession facts is held out, which seed."""

    pairs: int
    n_max: int
    held_out: float
    seed: int


def template_fragments() -> list[str]:
    """The literal text of every Table 1 template between its placeholders, 8+ characters."""
    parts = [p.strip() for t in TEMPLATES for p in re.split(r"\{[^}]*\}", t)]
    return [p for p in parts if len(p) >= 8]


def held_out_numbers(spec: CorpusSpec) -> frozenset[int]:
    """The numbers whose successor (and whose own predecessor fact) the corpus never states."""
    rng = random.Random(spec.seed + 1)
    n = spec.n_max + 1
    return frozenset(rng.sample(range(n), int(n * spec.held_out)))


def _as(fmt: str, n: int, given) -> str:
    return {SAME: given, NUM: str, WORDS: syn.number_in_words}[fmt](n)


def _words() -> set[str]:
    """Every word of the project's word list, whatever its part of speech."""
    return {x for ws in syn.word_list().values() for x in ws}


def corpus(spec: CorpusSpec) -> list[Pair]:
    """The seeded pretraining pairs: 60 % numbers, 20 % words, 20 % odd character out."""
    rng = random.Random(spec.seed)
    held = held_out_numbers(spec)
    w = syn.number_in_words
    words = sorted(_words())
    nums = [x for x in range(spec.n_max) if x not in held]  # x and x+1 both spelled

    def number_pair() -> Pair:
        kind = rng.random()
        if kind < 0.25:
            n = rng.randrange(spec.n_max + 1)
            prompt, fmt = rng.choice(SPELL)
            return prompt.format(n=n, w=w(n)), _as(fmt, n, str)
        a = rng.choice(nums)
        given = rng.choice((str, w))
        if kind < 0.8:
            prompt, fmt = rng.choice(SUCC)
            return prompt.format(a=given(a)), _as(fmt, a + 1, given)
        prompt, fmt = rng.choice(PRED)
        return prompt.format(b=given(a + 1)), _as(fmt, a, given)

    def word_pair() -> Pair:
        x = rng.choice(words)
        if rng.random() < 0.3:
            return LETTER_SPELL.format(x=x), " ".join(x)
        prompt, fmt = rng.choice(LENGTH)
        return prompt.format(x=x), _as(fmt, len(x), str)

    def odd_one_out() -> Pair:
        pool, other = rng.choice([(syn.LETTERS, syn.DIGITS), (syn.DIGITS, syn.LETTERS),
                                  (syn.LETTERS, syn.LETTERS), (syn.DIGITS, syn.DIGITS)])
        chars = rng.sample(pool, rng.randint(2, 5))
        keep = chars[0] if pool == other else rng.choice(other)
        chars = chars[1:] + [keep] if pool == other else chars + [keep]
        rng.shuffle(chars)
        gone = " ".join(c for c in chars if c != keep)
        return rng.choice(ODD).format(gone=gone, s="".join(chars)), keep

    makers = [number_pair] * 6 + [word_pair] * 2 + [odd_one_out] * 2
    pairs = [rng.choice(makers)() for _ in range(spec.pairs)]
    for frag in template_fragments():
        assert not any(frag in p or frag in t for p, t in pairs), f"Table 1 fragment {frag!r} in the corpus"
    return pairs


def vocabulary() -> list[str]:
    """Every token: the specials, each word of the corpus forms, Table 1's templates, the word list
    and the digit words, and every single character with its ``##`` continuation."""
    forms = [p for p, _ in SPELL + SUCC + PRED + LENGTH] + list(ODD) + [LETTER_SPELL] + list(TEMPLATES)
    text = " ".join(forms + list(syn.DIGIT_WORDS) + list(syn.POS_TAGS) + [syn.NUMERALS, syn.IN_WORDS])
    words = set(re.findall(r"[A-Za-z]+", re.sub(r"\{[^}]*\}", " ", text)))
    words |= _words()
    chars = set(string.ascii_letters + string.digits + string.punctuation)
    return list(dict.fromkeys([*SPECIALS, *sorted(words | chars), *("##" + c for c in sorted(chars))]))


def corpus_identity() -> dict:
    """What the stand-in's weights depend on beyond its recipe: the corpus version and a digest of the
    vocabulary (which holds the word list and Table 1's templates), for its cache keys."""
    digest = hashlib.sha256("\n".join(vocabulary()).encode()).hexdigest()[:16]
    return {"corpus_version": CORPUS_VERSION, "vocabulary": digest}


def build_tokenizer():
    """The stand-in's WordPiece tokenizer (``vocabulary``), digits split one by one; EOS appended."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation("isolated"),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
