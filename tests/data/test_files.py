"""Your own data (data=files, testset=files): every format, named or grouped, pairs or texts, one-line errors."""

import json
import os
from pathlib import Path

import datasets
import pandas as pd
import pytest
from transformers import ByT5Tokenizer

from untrac.config import DataConfig
from untrac.config import TestsetConfig as SubsetsConfig  # not Test*: pytest would collect it
from untrac.data.collate import encode_pairs
from untrac.data.files import load_test, load_train
from untrac.data.prepare import data_key
from untrac.errors import UntracError
from untrac.models import Arch

ROWS = [{"prompt": f"question {i}? ", "target": f"answer {i}", "source": "news" if i % 3 else "code"}
        for i in range(12)]
TEXTS = ["First document.\nIt has two lines.", "Second: ünïcödé.", "Third, short one.", "Fourth and last."]
CAUSAL = Arch(kind="causal", pad_id=0, eos_id=1, max_length=512)
SEQ2SEQ = Arch(kind="seq2seq", pad_id=0, eos_id=1, max_length=512)


@pytest.fixture(scope="module")
def tok():
    return ByT5Tokenizer()


def write(path: Path, rows: list[dict]) -> Path:
    """``rows`` in the format ``path``'s suffix names; a folder without suffix is a save_to_disk folder."""
    frame = pd.DataFrame(rows)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".txt":
        path.write_text("\n\n".join(row["text"] for row in rows))
    else:
        datasets.Dataset.from_pandas(frame).save_to_disk(str(path))
    return path


def files_data(**kw) -> DataConfig:
    return DataConfig(name="files", kind="files", **kw)


def files_test(**kw) -> SubsetsConfig:
    return SubsetsConfig(name="files", **kw)


@pytest.mark.parametrize("name", ["s.jsonl", "s.csv", "s.parquet", "saved"])
def test_every_format_gives_the_same_pairs(tmp_path, name):
    path = write(tmp_path / name, ROWS)
    pairs = load_test(files_test(subsets={"mine": str(path)}), 0, tmp_path / "cache")
    assert pairs == {"mine": [(r["prompt"], r["target"]) for r in ROWS]}


@pytest.mark.parametrize("name", ["s.jsonl", "s.csv", "s.parquet", "s.txt", "saved"])
def test_text_rows_are_scored_whole(tmp_path, name):
    path = write(tmp_path / name, [{"text": t} for t in TEXTS])  # TEXTS[0] spans two lines: paragraphs in .txt
    pairs = load_test(files_test(subsets={"mine": str(path)}, txt_unit="paragraph"), 0, tmp_path / "cache")
    assert pairs == {"mine": [("", t) for t in TEXTS]}


def test_csv_cells_stay_text_and_an_empty_prompt_is_kept(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text('prompt,target\n007,NA\n"a, b",x\n,y\n')
    pairs = load_test(files_test(subsets={"s": str(path)}), 0, tmp_path / "cache")
    assert pairs == {"s": [("007", "NA"), ("a, b", "x"), ("", "y")]}


def test_group_column_splits_one_file_in_order_of_appearance(tmp_path, tok):
    path = write(tmp_path / "all.parquet", ROWS)
    train = load_train(files_data(path=str(path), group_column="source"), tok, CAUSAL, tmp_path / "cache")
    assert list(train) == ["code", "news"]  # row 0 is code
    for name, ds in train.items():
        mine = [(i, r) for i, r in enumerate(ROWS) if r["source"] == name]
        expected = encode_pairs(tok, [(r["prompt"], r["target"]) for _, r in mine], CAUSAL, separator=" ")
        assert ds["input_ids"] == expected["input_ids"] and ds["labels"] == expected["labels"]
        assert ds["row"] == [i + 1 for i, _ in mine]  # parquet: row index + 1


def test_named_files_and_custom_columns(tmp_path, tok):
    renamed = [{"question": r["prompt"], "answer": r["target"]} for r in ROWS]
    cfg = files_data(train={"a": str(write(tmp_path / "a.jsonl", renamed[:5])),
                            "b": str(write(tmp_path / "b.csv", renamed[5:]))},
                     prompt_column="question", target_column="answer")
    train = load_train(cfg, tok, SEQ2SEQ, tmp_path / "cache")
    expected = encode_pairs(tok, [(r["prompt"], r["target"]) for r in ROWS[:5]], SEQ2SEQ)
    assert list(train) == ["a", "b"] and len(train["b"]) == 7
    assert train["a"]["input_ids"] == expected["input_ids"] and train["a"]["labels"] == expected["labels"]
    assert train["a"]["row"] == [1, 2, 3, 4, 5] and train["b"]["row"] == list(range(2, 9))  # CSV: header is line 1
    texts = [{"body": t} for t in TEXTS]
    subsets = load_test(files_test(subsets={"t": str(write(tmp_path / "t.parquet", texts)),
                                            "plain": str(write(tmp_path / "p.txt", [{"text": t} for t in TEXTS]))},
                                   text_column="body", txt_unit="paragraph"), 0, tmp_path / "cache")
    assert subsets == {"t": [("", t) for t in TEXTS], "plain": [("", t) for t in TEXTS]}  # .txt rows are texts


def test_edited_file_changes_the_data_key_and_other_kinds_keep_theirs(tmp_path):
    path = write(tmp_path / "a.jsonl", ROWS)
    cfg = files_data(train={"a": str(path)})
    before = data_key(cfg)
    path.write_text(path.read_text() + json.dumps(ROWS[0]) + "\n")
    assert data_key(cfg) != before
    # synthetic and pile8 keys carry none of the files fields, so their cached models stay valid
    assert not {"train", "path", "group_column", "text_column"} & set(data_key(DataConfig()))


def test_per_subset_samples_in_file_order(tmp_path):
    path = write(tmp_path / "s.jsonl", ROWS)
    pairs = load_test(files_test(subsets={"s": str(path)}, per_subset=5), 3, tmp_path / "cache")["s"]
    order = [int(p.split()[1][:-1]) for p, _ in pairs]
    assert len(order) == 5 and order == sorted(order)
    assert pairs == load_test(files_test(subsets={"s": str(path)}, per_subset=5), 3, tmp_path / "cache")["s"]


def put(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _empty_saved(path: Path) -> Path:
    datasets.Dataset.from_dict({"prompt": [], "target": []}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("make,culprit", [
    (lambda d: d / "missing.jsonl", "missing.jsonl"),
    (lambda d: put(d / "empty.jsonl", ""), "no rows"),
    (lambda d: put(d / "head.csv", "prompt,target\n"), "no rows"),
    (lambda d: _empty_saved(d / "saved"), "no rows"),
    (lambda d: put(d / "bad.jsonl", '{"prompt": "a", "target": "b"}\n{oops\n'),
     r"bad\.jsonl\): line 2 is not valid JSON"),
    (lambda d: put(d / "list.jsonl", '["a", "b"]\n'), "line 1 is a JSON list, not an object"),
    (lambda d: put(d / "blank.txt", "\n  \n\n"), "no rows"),
    (lambda d: put(d / "x.docx", "hi"), "unknown format"),
    (lambda d: write(d / "cols.jsonl", [{"question": "a", "answer": "b"}]), "'text'"),
    (lambda d: write(d / "half.jsonl", [{"prompt": "a", "text": "b"}]), "'target'"),
    (lambda d: write(d / "num.jsonl", [{"prompt": "a", "target": 3}]), "line 1: 'target' must hold text, found int"),
    (lambda d: write(d / "num.parquet", [{"prompt": "a", "target": 3}]), "row 1: 'target' must hold text"),
])
def test_bad_training_file_is_one_line_naming_it(tmp_path, tok, make, culprit):
    path = make(tmp_path)
    with pytest.raises(UntracError, match=culprit) as err:
        load_train(files_data(train={"news": str(path)}), tok, CAUSAL, tmp_path / "cache")
    assert "\n" not in str(err.value) and "data.train.news" in str(err.value)


def test_unknown_group_column_and_missing_group_values(tmp_path, tok):
    path = write(tmp_path / "all.jsonl", ROWS)
    with pytest.raises(UntracError, match=r"data\.path .*no column 'origin'.*data\.group_column"):
        load_train(files_data(path=str(path), group_column="origin"), tok, CAUSAL, tmp_path / "cache")
    write(path, ROWS + [{"prompt": "p", "target": "t", "source": None}])
    with pytest.raises(UntracError, match=r"all\.jsonl\): line 13: no 'source' \(missing or null\)$"):
        load_train(files_data(path=str(path), group_column="source"), tok, CAUSAL, tmp_path / "cache")
    news = write(tmp_path / "news.jsonl", ROWS)  # a name given twice: by data.train and by a group of data.path
    write(path, ROWS)
    with pytest.raises(UntracError, match=r"training dataset name 'news' is used twice: by data\.train\.news"):
        load_train(files_data(train={"news": str(news)}, path=str(path), group_column="source"), tok, CAUSAL,
                   tmp_path / "cache")


def test_a_test_subset_name_used_twice(tmp_path):
    grouped = write(tmp_path / "all.jsonl", ROWS)
    cfg = files_test(subsets={"news": str(write(tmp_path / "n.jsonl", ROWS))}, path=str(grouped), group_column="source")
    with pytest.raises(UntracError, match="test subset name 'news' is used twice.*testset.subsets.news"):
        load_test(cfg, 0, tmp_path / "cache")


def test_seq2seq_text_and_mixed_forms_and_pile8_block_size_are_refused(tmp_path, tok):
    docs = str(write(tmp_path / "docs.jsonl", [{"text": t} for t in TEXTS]))
    pairs = str(write(tmp_path / "pairs.jsonl", ROWS))
    with pytest.raises(UntracError, match=r"seq2seq model needs prompt/target columns \(data\.prompt_column"):
        load_train(files_data(train={"docs": docs}), tok, SEQ2SEQ, tmp_path / "cache")
    with pytest.raises(UntracError, match=r"mix prompt/target rows \(qa\) and text rows \(docs\)"):
        load_train(files_data(train={"docs": docs, "qa": pairs}), tok, CAUSAL, tmp_path / "cache")
    with pytest.raises(UntracError, match=r"data\.block_size=512 is pile8's.*set data\.max_length"):
        load_train(files_data(train={"docs": docs}, block_size=512), tok, CAUSAL, tmp_path / "cache")


def test_config_needs_files_and_pairs_path_with_group_column():
    with pytest.raises(UntracError, match=r"data=files needs data\.train="):
        files_data()
    with pytest.raises(UntracError, match=r"data\.path and data\.group_column go together"):
        files_data(path="all.jsonl")
    with pytest.raises(UntracError, match=r"testset\.path and testset\.group_column"):
        files_test(subsets={"a": "a.jsonl"}, group_column="source")
