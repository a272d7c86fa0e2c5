"""Issue 17, your own data: every data mistake is one line naming the file and its 1-based line, one row
is one example whose number reaches examples.csv, the separator, the .txt unit, the default length
and the tokenisation cache."""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import datasets
import pandas as pd
import pytest
from transformers import ByT5Tokenizer

from untrac.config import DataConfig
from untrac.config import TestsetConfig as SubsetsConfig  # not Test*: pytest would collect it
from untrac.data import files
from untrac.data.collate import IGNORE
from untrac.data.prepare import load_task, sample
from untrac.errors import UntracError
from untrac.models import Arch
from untrac.pipeline import Experiment

CAUSAL = Arch(kind="causal", pad_id=0, eos_id=1, max_length=512)
SEQ2SEQ = Arch(kind="seq2seq", pad_id=0, eos_id=1, max_length=512)
BOS = EOS = 1  # ByT5 has no BOS: EOS stands in (collate)


@pytest.fixture(scope="module")
def tok():
    return ByT5Tokenizer()


def ids(text: str) -> list[int]:
    """ByT5's ids, computed independently: UTF-8 bytes + 3."""
    return [b + 3 for b in text.encode()]


def put(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def data(**kw) -> DataConfig:
    return DataConfig(name="files", kind="files", **kw)


def train_error(tmp_path, tok, path: Path, arch: Arch = CAUSAL, **kw) -> str:
    with pytest.raises(UntracError) as err:
        files.load_train(data(train={"news": str(path)}, **kw), tok, arch, tmp_path / "cache")
    assert "\n" not in str(err.value)
    return str(err.value)


FRAME = pd.DataFrame({"prompt": [f"q{i}" for i in range(10)], "target": [f"a{i}" for i in range(10)]})
FRAME.loc[6, "target"] = ""  # 0-based row 6: JSONL line 7, CSV line 8 (header = line 1), Parquet row 7
FRAME.loc[8, "target"] = "   "


@pytest.mark.parametrize("name,first,others", [
    ("news.jsonl", "line 7", "lines 7, 9"), ("news.csv", "line 8", "lines 8, 10"),
    ("news.parquet", "row 7", "rows 7, 9"), ("saved", "row 7", "rows 7, 9")])
def test_an_empty_or_blank_target_is_refused_in_every_format_naming_its_row(tmp_path, tok, name, first, others):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        FRAME.to_json(path, orient="records", lines=True)
    elif name.endswith(".csv"):
        FRAME.to_csv(path, index=False)
    elif name.endswith(".parquet"):
        FRAME.to_parquet(path)
    else:
        datasets.Dataset.from_pandas(FRAME).save_to_disk(str(path))
    assert train_error(tmp_path, tok, path) == (f"data.train.news ({path}): {first}: empty 'target'; "
                                                f"2 rows have no or an empty 'target' ({others})")


def test_a_null_or_missing_target_and_a_ragged_csv_row_are_refused(tmp_path, tok):
    path = put(tmp_path / "n.jsonl", '{"prompt": "a", "target": "b"}\n{"prompt": "c", "target": null}\n')
    assert train_error(tmp_path, tok, path).endswith("line 2: no 'target' (missing or null)")
    path = put(tmp_path / "m.jsonl", '{"prompt": "a", "target": "b"}\n\n{"prompt": "c"}\n')
    assert train_error(tmp_path, tok, path).endswith("line 3: no 'target' (missing or null)")  # blank line 2 counts
    path = put(tmp_path / "e.jsonl", '{"text": "a"}\n{"text": ""}\n')
    assert train_error(tmp_path, tok, path).endswith("line 2: empty 'text'")
    path = put(tmp_path / "r.csv", "prompt,target\na,b\nc\nd,e\n")
    assert train_error(tmp_path, tok, path).endswith(
        "line 3 has 1 field but the header (line 1) has 2 fields: a missing or extra comma, "
        "or an unquoted comma in a cell")
    path = put(tmp_path / "l.csv", 'prompt,target\n"two\nlines",b\nc,d,e\n')  # a record may span lines
    assert "line 4 has 3 fields" in train_error(tmp_path, tok, path)


@pytest.mark.parametrize("name,body", [
    ("u.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": "caf\xe9"}\n'),
    ("u.csv", b"text\na\ncaf\xe9\n"), ("u.txt", b"a\nb\ncaf\xe9\n")])
def test_a_byte_that_is_not_utf8_names_its_line(tmp_path, tok, name, body):
    path = put(tmp_path / name, body)
    at = body.splitlines()[2].index(b"\xe9") + 1
    assert train_error(tmp_path, tok, path) == (f"data.train.news ({path}): line 3 is not UTF-8 (byte 0xe9 at "
                                                f"byte {at} of the line); save the file as UTF-8")


def test_malformed_json_names_its_1_based_line(tmp_path, tok):
    path = put(tmp_path / "j.jsonl", "".join(f'{{"text": "t{i}"}}\n' for i in range(5)) + '{"text": oops}\n')
    assert "line 6 is not valid JSON (Expecting value at column 10)" in train_error(tmp_path, tok, path)


def test_txt_unit_line_or_paragraph_and_the_log_says_which(tmp_path, tok, caplog):
    path = put(tmp_path / "news.txt", "One sentence.\nTwo sentence.\n\nThree.\n")
    caplog.set_level(logging.INFO, logger="untrac.data.files")
    lines = files.load_train(data(train={"news": str(path)}), tok, CAUSAL, tmp_path / "c")["news"]
    assert lines["row"] == [1, 2, 4]
    assert lines["input_ids"][1] == [BOS] + ids("Two sentence.") + [EOS]
    assert f"training dataset news, data.train.news ({path}): 3 rows, 3 examples (one per line)" in caplog.text
    paragraphs = files.load_train(data(train={"news": str(path)}, txt_unit="paragraph"), tok, CAUSAL,
                                  tmp_path / "c")["news"]
    assert paragraphs["row"] == [1, 4]
    assert paragraphs["input_ids"][0] == [BOS] + ids("One sentence.\nTwo sentence.") + [EOS]
    assert "2 rows, 2 examples (one per paragraph)" in caplog.text


def test_a_long_causal_row_is_chunked_within_the_row(tmp_path, tok, caplog):
    text = "abcdefghijklmnopqrst"  # 20 bytes: BOS + 20 + EOS = 22 tokens
    path = put(tmp_path / "d.jsonl", json.dumps({"text": "short"}) + "\n" + json.dumps({"text": text}) + "\n")
    caplog.set_level(logging.INFO, logger="untrac.data.files")
    ds = files.load_train(data(train={"d": str(path)}, max_length=8), tok, CAUSAL, tmp_path / "c")["d"]
    tokens = [BOS] + ids(text) + [EOS]
    # Windows of 8 overlapping by one token: each token after the BOS is predicted once, from context.
    assert ds["input_ids"] == [[BOS] + ids("short") + [EOS], tokens[0:8], tokens[7:15], tokens[14:22]]
    assert ds["row"] == [1, 2, 2, 2]  # every chunk points at its row, line 2
    assert all(labels == [IGNORE] + window[1:] for labels, window in zip(ds["labels"], ds["input_ids"]))
    predicted = [t for labels in ds["labels"][1:] for t in labels if t != IGNORE]
    assert predicted == tokens[1:]
    assert "2 rows, 4 examples (one per row; 1 row longer than 8 tokens (data.max_length) chunked" in caplog.text


def test_a_prompt_that_leaves_no_target_token_is_refused(tmp_path, tok):
    path = put(tmp_path / "p.jsonl", '{"prompt": "a", "target": "b"}\n{"prompt": "0123456789", "target": "b"}\n')
    assert ("line 2: the prompt fills all 8 tokens (data.max_length), leaving no target token to score"
            in train_error(tmp_path, tok, path, max_length=8))


def test_the_separator_goes_between_prompt_and_target_of_a_causal_model(tmp_path, tok):
    path = put(tmp_path / "p.jsonl", '{"prompt": "seeds?", "target": "The"}\n{"prompt": "", "target": "x"}\n')
    default = files.load_train(data(train={"p": str(path)}), tok, CAUSAL, tmp_path / "c")["p"]
    assert default["input_ids"][0] == [BOS] + ids("seeds? The") + [EOS]
    assert default["labels"][0] == [IGNORE] * (1 + len("seeds? ")) + ids("The") + [EOS]  # the separator is prompt
    assert default["input_ids"][1] == [BOS] + ids("x") + [EOS]  # an empty prompt gets no separator
    for given in ("\n", "\\n"):  # a newline, or backslash-n as Hydra passes data.separator='\n'
        newline = files.load_train(data(train={"p": str(path)}, separator=given), tok, CAUSAL, tmp_path / "c")["p"]
        assert newline["input_ids"][0] == [BOS] + ids("seeds?\nThe") + [EOS]
    task = load_task(data(train={"p": str(path)}), SubsetsConfig(name="files", subsets={"t": str(path)}, separator="|"),
                     tok, CAUSAL, tmp_path / "c")
    assert task.test["t"]["input_ids"][0] == [BOS] + ids("seeds?|The") + [EOS]  # testset.separator


def test_max_length_defaults_to_the_model_positions_and_a_larger_setting_is_refused(tmp_path, tok):
    small = Arch(kind="causal", pad_id=0, eos_id=1, max_length=64)
    assert files.max_length(data(train={"a": "a.jsonl"}), small) == 64
    assert files.max_length(data(train={"a": "a.jsonl"}), Arch("causal", 0, 1, 4096)) == 1024  # run_clm.py's cap
    path = put(tmp_path / "d.jsonl", json.dumps({"text": "x" * 100}) + "\n")
    ds = files.load_train(data(train={"d": str(path)}), tok, small, tmp_path / "c")["d"]
    assert max(len(row) for row in ds["input_ids"]) == 64 and set(ds["row"]) == {1}
    assert train_error(tmp_path, tok, path, small, max_length=128) == (
        "data.max_length=128 exceeds the model's 64 positions; set data.max_length<=64 or leave it null "
        "(the model's own, at most 1024)")


def test_a_second_load_reuses_the_tokenised_file(tmp_path, tok, monkeypatch):
    path = put(tmp_path / "p.jsonl", "".join(json.dumps({"prompt": f"q{i}", "target": f"a{i}"}) + "\n"
                                              for i in range(6)))
    cfg = data(train={"a": str(path), "b": str(path)})  # one file under two names: tokenised once
    first = files.load_train(cfg, tok, CAUSAL, tmp_path / "c")
    assert len(list((tmp_path / "c" / "files" / "tokenised").iterdir())) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("re-read or re-tokenised")

    monkeypatch.setattr(files, "read", refuse)
    monkeypatch.setattr(files, "encode_source", refuse)
    again = files.load_train(cfg, tok, CAUSAL, tmp_path / "c")
    assert again["a"]["input_ids"] == first["a"]["input_ids"] and again["b"]["row"] == first["a"]["row"]
    with pytest.raises(AssertionError, match="re-tokenised"):  # another setting is another entry
        files.load_train(data(train={"a": str(path)}, separator=""), tok, CAUSAL, tmp_path / "c")


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@pytest.mark.parametrize("arch", [CAUSAL, SEQ2SEQ], ids=["causal", "seq2seq"])
def test_examples_csv_example_is_the_row_number_in_the_file(tmp_path, tok, kind, arch):
    rows = [{"prompt": f"question {i}", "target": f"answer {i}"} for i in range(8)]
    path = tmp_path / f"news.{kind}"
    if kind == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
        number = [i + 2 for i in range(8)]  # header = line 1
    else:
        put(path, "\n".join(json.dumps(row) + "\n" for row in rows))  # a blank line after each row
        number = [2 * i + 1 for i in range(8)]
    train = files.load_train(data(train={"news": str(path)}), tok, arch, tmp_path / "c")
    scored = {"news": sample(train["news"], 5, seed=3)}  # a shuffled sample: index != row
    picked = [scored["news"][i]["row"] for i in range(5)]
    scores = pd.DataFrame({"train_dataset": "news", "example": range(5), "test_subset": "t",
                           "score": [0.1, 0.5, 0.3, 0.9, 0.2]})
    fake = SimpleNamespace(cfg=SimpleNamespace(method=SimpleNamespace(name="graddot"), rank=SimpleNamespace(top_k=2)),
                           tokenizer=tok, arch=arch, results=SimpleNamespace(examples=pd.DataFrame()))
    Experiment._keep_examples(fake, scores, scored, run=0)
    top = fake.results.examples
    assert list(top.example) == [picked[3], picked[1]]  # the two best, by their line in the file
    for line, text in zip(top.example, top.text):
        source = rows[number.index(line)]
        joined = (f"{source['prompt']} → {source['target']}" if arch.kind == "seq2seq"
                  else f"{source['prompt']} {source['target']}")
        assert text == joined  # the user's row, as the model read it


def test_the_new_settings_are_range_checked():
    with pytest.raises(UntracError, match=r"data\.txt_unit='sentence' is not one of line, paragraph"):
        data(train={"a": "a.txt"}, txt_unit="sentence")
    with pytest.raises(UntracError, match=r"data\.max_length must be >= 2, got 1"):
        data(train={"a": "a.txt"}, max_length=1)
    with pytest.raises(UntracError, match=r"testset\.txt_unit='page' is not one of line, paragraph"):
        SubsetsConfig(name="files", subsets={"t": "t.txt"}, txt_unit="page")
