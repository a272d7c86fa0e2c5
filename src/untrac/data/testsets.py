"""The test sets of §5.2 (ToxiGen, WinoBias, TruthfulQA), as named subsets of text pairs.

§5.2 measures "the negative log-probability of toxic language, biased text, and false answers"
and averages the correlation over 13 ToxiGen, 4 WinoBias and 9 TruthfulQA subsets. The subsets
follow UnTrac's ``preprocess_test.py``: ToxiGen by target group, WinoBias type 1 by stereotype
(pro/anti) and pronoun gender, TruthfulQA incorrect answers by category. Each subset is a
seeded sample of ``per_subset`` examples (256 in the paper); a smaller subset is kept whole,
where the paper's sampler repeated examples to reach 256 (same mean loss up to weighting).
"""

import ast
import logging
import re
import zlib
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from untrac.data import Pair
from untrac.errors import UntracError

log = logging.getLogger(__name__)

# (path, config, split) on the hub. The paper used "wino_bias" and "truthful_qa", since moved
# to these namespaced ids; skg/toxigen-data is gated (accept its terms, then log in).
HUB = {
    "toxigen": ("skg/toxigen-data", "train", "train"),
    "winobias": ("uclanlp/wino_bias", None, "validation+test"),
    "truthfulqa": ("truthfulqa/truthful_qa", "generation", "validation"),
}
TOXIGEN_WORDS = (9, 24)  # paper code: 8 < len(generation.split(" ")) <= 24
WINOBIAS_SUBSETS = ("pro_female", "pro_male", "anti_female", "anti_male")
TRUTHFULQA_MIN_ANSWERS = 128  # categories with fewer incorrect answers are dropped
_FEMALE, _MALE = {"she", "her"}, {"he", "his", "him"}


def load_testset(name: str, source: str, root: str | Path | None, per_subset: int = 256,
                 seed: int = 0) -> dict[str, list[Pair]]:
    """Subset name -> pairs for test set ``name`` (toxigen | winobias | truthfulqa).

    ``source="local"`` reads the upstream files under ``root`` (the test set's own folder, or a
    folder holding it as ``<root>/<name>/``): ToxiGen ``annotated/annotated_train.csv``, WinoBias
    ``conll_format/*_type1_*``, TruthfulQA ``TruthfulQA.csv``. ``source="hub"`` loads ``HUB``.
    Pairs are ("", text) for ToxiGen and WinoBias (every token counts) and (question + " ",
    answer) for TruthfulQA (loss on the answer). Sampling is seeded per subset, in file order.
    """
    loaders = {"toxigen": _toxigen, "winobias": _winobias, "truthfulqa": _truthfulqa}
    if name not in loaders:
        raise UntracError(f"testset {name!r} is unknown (choose from {', '.join(loaders)})")
    if source not in ("local", "hub"):
        raise UntracError(f"testset {name!r}: testset.source must be 'local' or 'hub', not "
                          f"{source!r}")
    if per_subset < 1:
        raise UntracError(f"testset {name!r}: per_subset must be >= 1, not {per_subset}")
    if source == "local" and root is None:
        raise UntracError(f"testset {name!r}: testset.root is not set (needed for source=local)")
    frame = loaders[name](_hub(name) if source == "hub" else None, Path(root or "."))
    return _sample(name, frame, per_subset, seed)


def _toxigen(hub: pd.DataFrame | None, root: Path) -> pd.DataFrame:
    """Toxic generations per target group (hub: ``prompt_label == 1``; local: ``label == hate``).

    The local file is ToxiGen's human-annotated sample (SOURCES.md §4b), a stand-in for the
    machine generations the paper used, with fewer than 256 rows per group after filtering.
    """
    if hub is not None:
        _require(hub, ["prompt_label", "group", "generation"], HUB["toxigen"][0])
        rows, where = hub[hub["prompt_label"] == 1], HUB["toxigen"][0]
        frame = pd.DataFrame({"subset": rows["group"], "target": rows["generation"]})
    else:
        where = _locate(root, "toxigen", "annotated/annotated_train.csv")
        rows = _read_csv(where, ["text", "target_group", "label"])
        rows = rows[rows["label"] == "hate"]
        frame = pd.DataFrame({"subset": rows["target_group"], "target": rows["text"].map(_unbytes)})
    words = frame["target"].str.split(" ").str.len()
    frame = frame[(words >= TOXIGEN_WORDS[0]) & (words <= TOXIGEN_WORDS[1])]
    return _ordered(frame.assign(prompt=""), sorted(set(frame["subset"])), "toxigen", where)


_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|[nrt\\'\"])")
_CONTROL = {"n": "\n", "r": "\r", "t": "\t"}


def _unbytes(text: str) -> str:
    """Decode a Python bytes literal (``b'...'``, as ToxiGen's CSV stores texts), then undo the
    escapes stored inside it once more (``\\n``, ``\\t``, ``\\u2019``, quotes)."""
    try:
        value = ast.literal_eval(text)
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    except (ValueError, SyntaxError):  # not a clean literal: strip b'/b" and the quote
        if text[:2] in ("b'", 'b"') and text.endswith(text[1]):
            text = text[2:-1]
    for _ in range(3):  # a few texts were escaped twice or three times
        text, before = _ESCAPE.sub(_unescape, text), text
        if text == before:
            break
    return text.strip()


def _unescape(match: re.Match) -> str:
    code = match[1]
    return chr(int(code[1:], 16)) if code[0] == "u" else _CONTROL.get(code, code)


def _winobias(hub: pd.DataFrame | None, root: Path) -> pd.DataFrame:
    """Type-1 sentences (dev + test), pro/anti-stereotypical x pronoun gender."""
    rows = []
    if hub is not None:
        _require(hub, ["tokens"], HUB["winobias"][0])
    for kind in ("pro", "anti"):
        if hub is not None:
            sentences, where = hub[hub["kind"] == kind]["tokens"], HUB["winobias"][0]
        else:
            where = _locate(root, "winobias", "conll_format")
            sentences = [tokens for split in ("dev", "test") for tokens in _conll(
                _locate(root, "winobias", f"conll_format/{split}_type1_{kind}_stereotype"
                                          ".v4_auto_conll"))]
        for tokens in sentences:
            female, male = bool(_FEMALE.intersection(tokens)), bool(_MALE.intersection(tokens))
            if female != male:  # exactly one gender's pronouns, as in the paper's code
                rows.append((f"{kind}_{'female' if female else 'male'}", "", " ".join(tokens)))
    frame = pd.DataFrame(rows, columns=["subset", "prompt", "target"])
    return _ordered(frame, list(WINOBIAS_SUBSETS), "winobias", where)


def _conll(path: Path) -> list[list[str]]:
    """Token column (4th) of a CoNLL-2012 file; a sentence ends at a blank or ``#`` line."""
    sentences = [[]]
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.startswith("#") or not line.strip():
                if sentences[-1]:
                    sentences.append([])
            elif len(fields := line.split()) < 4:
                raise UntracError(f"{path}: line {number} has {len(fields)} columns, not >= 4")
            else:
                sentences[-1].append(fields[3])
    return [tokens for tokens in sentences if tokens]


def _truthfulqa(hub: pd.DataFrame | None, root: Path) -> pd.DataFrame:
    """One pair per (question, incorrect answer), grouped by category as the paper's code."""
    if hub is not None:
        _require(hub, ["category", "question", "incorrect_answers"], HUB["truthfulqa"][0])
        where, qa = HUB["truthfulqa"][0], hub.rename(columns={"incorrect_answers": "answer"})
    else:
        where = _locate(root, "truthfulqa", "TruthfulQA.csv")
        qa = _read_csv(where, ["Category", "Question", "Incorrect Answers"])
        qa = pd.DataFrame({"category": qa["Category"], "question": qa["Question"],
                           "answer": qa["Incorrect Answers"].str.split(";")})
    qa = qa.explode("answer").dropna(subset=["answer"])
    category = qa["category"].str.strip()
    subset = np.where(category.str.contains("Indexical Error"), "indexical_error",
                      np.where(category.str.contains("Confusion"), "confusion",
                               category.str.lower().str.replace(r"\W+", "_", regex=True)))
    frame = pd.DataFrame({"subset": subset, "prompt": qa["question"].str.strip() + " ",
                          "target": qa["answer"].str.strip()})
    frame = frame[frame["target"] != ""]
    counts = frame["subset"].value_counts()
    kept = sorted(counts[counts >= TRUTHFULQA_MIN_ANSWERS].index, key=lambda s: (-counts[s], s))
    return _ordered(frame, kept, "truthfulqa", where)


def _ordered(frame: pd.DataFrame, subsets: list[str], name: str, where) -> pd.DataFrame:
    """Rows of ``subsets`` only, grouped in that order (file order within a subset)."""
    rank = {subset: i for i, subset in enumerate(subsets)}
    frame = frame[frame["subset"].isin(rank)]
    if frame.empty:
        raise UntracError(f"testset {name!r}: no usable examples in {where}")
    return frame.iloc[np.argsort(frame["subset"].map(rank).to_numpy(), kind="stable")]


def _sample(name: str, frame: pd.DataFrame, per_subset: int, seed: int) -> dict[str, list[Pair]]:
    out, short = {}, []
    for subset, rows in frame.groupby("subset", sort=False):
        if len(rows) > per_subset:  # a per-subset stream, so one subset's size moves no other
            rng = np.random.default_rng([seed, zlib.crc32(subset.encode())])
            rows = rows.iloc[np.sort(rng.choice(len(rows), per_subset, replace=False))]
        elif len(rows) < per_subset:
            short.append(f"{subset} {len(rows)}")
        out[subset] = list(zip(rows["prompt"], rows["target"]))
    if short:
        log.warning("testset %s: fewer than %d examples, all kept: %s", name, per_subset,
                    ", ".join(short))
    return out


def _hub(name: str) -> pd.DataFrame:
    path, config, split = HUB[name]
    try:
        if name == "winobias":  # two configs; "kind" records which
            return pd.concat([datasets.load_dataset(path, f"type1_{kind}", split=split)
                              .to_pandas().assign(kind=kind) for kind in ("pro", "anti")])
        return datasets.load_dataset(path, config, split=split).to_pandas()
    except Exception as err:  # offline, gated, renamed: all fixed the same way
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise UntracError(f"testset {name!r}: cannot load hub dataset {path!r} ({reason}); "
                          f"set testset.source=local testset.root=<folder>") from err


def _locate(root: Path, name: str, relative: str) -> Path:
    """``<root>/<relative>``, or ``<root>/<name>/<relative>`` when root holds all test sets."""
    for base in (root, root / name):
        if (base / relative).exists():
            return base / relative
    raise UntracError(f"testset {name!r}: {root / relative} not found (set testset.root to the "
                      f"folder holding it)")


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:
        raise UntracError(f"{path}: cannot be read as CSV ({type(err).__name__})") from err
    _require(frame, columns, path)
    return frame


def _require(frame: pd.DataFrame, columns: list[str], where) -> None:
    if missing := [column for column in columns if column not in frame.columns]:
        raise UntracError(f"{where}: missing column(s) {', '.join(missing)}")
