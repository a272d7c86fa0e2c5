"""Issue 20 probe: a tiny pretrained "stand-in for pretraining" for the synthetic datasets A/B.

The paper finetunes a *pretrained* T5, which already knows numbers; the cpu preset's random tiny
T5 cannot transfer the successor task across answer formats. This script builds, offline and
seeded, a small seq2seq model that knows the world facts the synthetic tasks rely on, and saves it
as a Hugging Face folder the runner scores with ``model=local model.name_or_path=<folder>``:

- corpus: generated (prompt, target) pairs in many surface forms -- numerals <-> digit-by-digit
  words, succession and predecessor (numerals, words, mixed), word lengths and spellings, picking
  the odd character out of a short string -- for numbers 0..999 and the project's word list.
  **No Table 1 template** (synthetic.py's SUCCESSOR, LENGTH, ... fragments) occurs in it: asserted.
  Succession facts about a seeded 10 % of the numbers are held out, to measure what was learned.
- tokenizer: WordPiece (``tokenizers``) whose vocabulary is every word of the corpus, the templates
  and words.tsv, plus single characters and ``##``-continuations, with digits split one by one:
  numerals read digit by digit, so succession is learnable as an algorithm. No unknown token on
  synthA/synthB (checked by ``unknown_tokens``; tests/test_standin.py).
- model: T5ForConditionalGeneration from a config (d_model 128, 2+2 layers), AdamW with warmup.

    PYTHONPATH=src .venv/bin/python scripts/standin.py            # -> outputs/standin/<hash>/
    PYTHONPATH=src .venv/bin/python scripts/standin.py --steps 200  # a quick smoke run

The folder name is a short hash of RECIPE (``recipe_hash``): any change of recipe is a new folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import string
import time
from pathlib import Path

from untrac.data import synthetic as syn

RECIPE = dict(version=1, seed=0, n_max=999, held_out=0.1, corpus=200_000, d_model=128, layers=2,
              heads=4, d_ff=512, steps=8000, batch=64, lr=1e-3, warmup=400, min_lr_frac=0.1)
SPECIALS = ["<pad>", "</s>", "<unk>"]
TEMPLATES = (syn.SUCCESSOR, syn.LENGTH, syn.SUCCESSOR_TEST, syn.REMOVAL, syn.REMOVAL_TEST,
             syn.POS_BY_LETTER, syn.POS_BY_NUMBER)


def recipe_hash(recipe: dict) -> str:
    """Eight hex digits naming a recipe (its sorted JSON), hence the output folder."""
    return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]


def template_fragments() -> list[str]:
    """The literal text of every Table 1 template between its placeholders, 8+ characters."""
    parts = [p.strip() for t in TEMPLATES for p in re.split(r"\{[^}]*\}", t)]
    return [p for p in parts if len(p) >= 8]


def held_out_numbers(recipe: dict) -> set[int]:
    rng = random.Random(recipe["seed"] + 1)
    n = recipe["n_max"] + 1
    return set(rng.sample(range(n), int(n * recipe["held_out"])))


def corpus(recipe: dict) -> list[tuple[str, str]]:
    """The seeded pretraining pairs (see module docstring); asserts no Table 1 fragment."""
    rng = random.Random(recipe["seed"])
    held = held_out_numbers(recipe)
    w = syn.number_in_words
    words = sorted({x for ws in syn.word_list().values() for x in ws})
    nums = [x for x in range(recipe["n_max"]) if x not in held]  # x and x+1 both spelled
    spell = [("spell {n} digit by digit", "{w}"), ("{n} in words :", "{w}"),
             ("say the digits of {n}", "{w}"), ("write {w} with digits", "{n}"),
             ("{w} as a numeral :", "{n}"), ("digits for {w} ?", "{n}")]
    succ = [("{a} is followed by", "{b}"), ("count on from {a} :", "{b}"), ("after {a} we say", "{b}"),
            ("next number after {a}", "{b}"), ("one more than {a} is", "{b}"), ("{a} plus one =", "{b}"),
            ("the successor of {a}", "{b}"), ("{a} , then", "{b}")]
    pred = [("{b} comes just after", "{a}"), ("one less than {b} is", "{a}"), ("{b} minus one =", "{a}")]
    length = [("how many letters does '{x}' have ?", "{n}"), ("count the letters in {x}", "{n}"),
              ("the word {x} is this long :", "{n}"), ("letters in the word {x} ?", "{n}")]

    def number_pair() -> tuple[str, str]:
        kind = rng.random()
        if kind < 0.25:
            n = rng.randrange(recipe["n_max"] + 1)
            p, t = rng.choice(spell)
            return p.format(n=n, w=w(n)), t.format(n=n, w=w(n))
        a = rng.choice(nums)
        p, t = rng.choice(succ if kind < 0.8 else pred)
        fa, fb = rng.choice([(str, str), (w, w), (str, w), (w, str)])  # numerals, words or mixed
        return p.format(a=fa(a), b=fb(a + 1)), t.format(a=fa(a), b=fb(a + 1))

    def word_pair() -> tuple[str, str]:
        x = rng.choice(words)
        if rng.random() < 0.3:
            return f"spell {x} letter by letter", " ".join(x)
        p, t = rng.choice(length)
        return p.format(x=x), t.format(n=rng.choice([str, w])(len(x)))

    def odd_one_out() -> tuple[str, str]:
        pool, other = rng.choice([(syn.LETTERS, syn.DIGITS), (syn.DIGITS, syn.LETTERS),
                                  (syn.LETTERS, syn.LETTERS), (syn.DIGITS, syn.DIGITS)])
        chars = rng.sample(pool, rng.randint(2, 5))
        keep = chars[0] if pool == other else rng.choice(other)
        chars = chars[1:] + [keep] if pool == other else chars + [keep]
        rng.shuffle(chars)
        gone = " ".join(c for c in chars if c != keep)
        s = "".join(chars)
        return rng.choice([(f"take {gone} out of {s} and keep", keep),
                           (f"'{s}' without {gone} is", keep),
                           (f"drop {gone} from '{s}' :", keep),
                           (f"which character of {s} is not among {gone} ?", keep)])

    makers = [number_pair] * 6 + [word_pair] * 2 + [odd_one_out] * 2
    pairs = [rng.choice(makers)() for _ in range(recipe["corpus"])]
    for frag in template_fragments():
        assert not any(frag in p or frag in t for p, t in pairs), f"Table 1 fragment {frag!r} in corpus"
    return pairs


def synth_pairs(seed: int = 0) -> list[tuple[str, str]]:
    """Every prompt/target pair of synthA and synthB (train and test) for one data seed."""
    out = []
    for variant in "AB":
        data = syn.generate(variant, seed=seed)
        for pairs in list(data.train.values()) + list(data.test.values()):
            out += pairs
    return out


def build_tokenizer(texts: list[str]):
    """WordPiece over the words of ``texts`` + single characters (see module docstring)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                   pre_tokenizers.Punctuation("isolated"),
                                   pre_tokenizers.Digits(individual_digits=True)])
    seen = sorted({piece for t in texts for piece, _ in pre.pre_tokenize_str(t)})
    chars = sorted(set(syn.LETTERS + syn.LETTERS.upper() + syn.DIGITS + string.punctuation)
                   | {c for s in seen for c in s})
    vocab_list = SPECIALS + sorted(set(seen) | set(chars)) + ["##" + c for c in chars]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")


def vocabulary_texts(pairs: list[tuple[str, str]], min_count: int = 200) -> list[str]:
    """Texts whose words make the vocabulary: Table 1's templates, the word list, number words and
    the corpus's words seen ``min_count``+ times (its templates, not its random strings, which
    fall back to characters)."""
    from collections import Counter

    fixed = [re.sub(r"\{[^}]*\}", " ", t) for t in TEMPLATES] + list(syn.DIGIT_WORDS)
    fixed += [x for ws in syn.word_list().values() for x in ws] + list(syn.POS_TAGS)
    fixed += [syn.NUMERALS, syn.IN_WORDS]
    counts = Counter(x for p, t in pairs for x in re.findall(r"[A-Za-z]+", p + " " + t))
    return fixed + sorted(x for x, c in counts.items() if c >= min_count)


def unknown_tokens(tokenizer, pairs) -> int:
    unk = tokenizer.unk_token_id
    return sum(i == unk for p, t in pairs for i in tokenizer(p + " " + t).input_ids)


def pretrain(recipe: dict, out: Path, steps: int) -> dict:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(recipe["seed"])
    t0 = time.time()
    pairs = corpus(recipe)
    tok = build_tokenizer(vocabulary_texts(pairs))
    assert unknown_tokens(tok, pairs[:5000]) == 0
    unk = unknown_tokens(tok, synth_pairs())
    assert unk == 0, f"{unk} unknown tokens on synthA/synthB"
    enc = tok([p for p, _ in pairs]).input_ids
    dec = tok([t for _, t in pairs]).input_ids
    cfg = T5Config(vocab_size=len(tok), d_model=recipe["d_model"], d_kv=recipe["d_model"] // recipe["heads"],
                   d_ff=recipe["d_ff"], num_layers=recipe["layers"], num_decoder_layers=recipe["layers"],
                   num_heads=recipe["heads"], dropout_rate=0.0, feed_forward_proj="relu",
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=0.01)
    floor = recipe["min_lr_frac"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / recipe["warmup"]) * max(
        floor, 1 - (1 - floor) * s / steps))
    rng = random.Random(recipe["seed"] + 2)

    def pad(rows):
        width = max(map(len, rows))
        return torch.tensor([r + [0] * (width - len(r)) for r in rows])

    model.train()
    for step in range(steps):
        idx = [rng.randrange(len(pairs)) for _ in range(recipe["batch"])]
        labels = pad([dec[i] for i in idx])
        labels[labels == 0] = -100
        x = pad([enc[i] for i in idx])
        loss = model(input_ids=x, attention_mask=(x != 0).long(), labels=labels).loss
        loss.backward()
        opt.step(), sched.step(), opt.zero_grad()
        if step % 500 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    report = dict(recipe=recipe, steps_run=steps, seconds=round(time.time() - t0),
                  params=sum(p.numel() for p in model.parameters()), vocab=len(tok),
                  accuracy=evaluate(model, tok, recipe))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "standin.json").write_text(json.dumps(report, indent=1))
    return report


def evaluate(model, tok, recipe: dict) -> dict:
    """Greedy exact-match accuracy on held-out succession facts (never in the corpus), in
    numerals, words and the numerals-in -> numerals-out test range, plus spelling."""
    import torch

    model.eval()
    held = sorted(x for x in held_out_numbers(recipe) if x < recipe["n_max"])
    w = syn.number_in_words
    probes = {"succ_numeral": [(f"{x} is followed by", str(x + 1)) for x in held],
              "succ_words": [(f"{w(x)} is followed by", w(x + 1)) for x in held],
              "succ_words_to_numeral": [(f"next number after {w(x)}", str(x + 1)) for x in held],
              "spell": [(f"spell {x} digit by digit", w(x)) for x in held]}
    acc = {}
    with torch.no_grad():
        for name, ps in probes.items():
            batch = tok([p for p, _ in ps], return_tensors="pt", padding=True)
            gen = model.generate(**batch, max_new_tokens=12, do_sample=False, num_beams=1)
            want = tok([t for _, t in ps]).input_ids
            got = [[i for i in g.tolist()[1:] if i != 0] for g in gen]
            acc[name] = round(sum(g == t for g, t in zip(got, want)) / len(ps), 3)
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="override RECIPE steps (changes the hash)")
    ap.add_argument("--lr", type=float, default=None, help="override RECIPE lr (changes the hash)")
    ap.add_argument("--seed", type=int, default=None, help="override RECIPE seed (changes the hash)")
    args = ap.parse_args()
    recipe = dict(RECIPE)
    if args.steps:
        recipe["steps"] = args.steps
    if args.lr:
        recipe["lr"] = args.lr
    if args.seed is not None:
        recipe["seed"] = args.seed
    out = Path("outputs/standin") / recipe_hash(recipe)
    print(f"recipe {recipe} -> {out}", flush=True)
    print(json.dumps(pretrain(recipe, out, recipe["steps"]), indent=1))


if __name__ == "__main__":
    main()
