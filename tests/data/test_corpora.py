"""Pretraining corpora (§5.2): local files -> texts -> fixed-length token blocks, cached."""

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
from transformers import ByT5Tokenizer

from untrac.data.corpora import CORPORA, PAPER_SIZES, BlockSpec, TextSource, build_blocks, load_pile8, read_texts
from untrac.errors import UntracError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")

DOCS = ["First document.\nIt has two lines.", "Second: ünïcödé and a literal </s> inside.",
        "Third, short.", "Fourth document, a little longer than the others to cross blocks."]


class Bytes:
    """ByT5's ids (UTF-8 byte + 3, EOS 1) at C speed, for the 13.6 MB of real corpora."""

    eos_token_id, name_or_path = 1, "bytes"

    def __len__(self):
        return 259

    def __call__(self, text, **_):
        texts = [text] if isinstance(text, str) else text
        ids = [(np.frombuffer(t.encode(), np.uint8).astype(np.int64) + 3).tolist() for t in texts]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}


@pytest.fixture(scope="module")
def tok():
    return ByT5Tokenizer()


def write(path: Path, docs: list[str]) -> Path:
    if path.suffix == ".txt":
        path.write_text("\n\n".join(docs))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n"
                                for i, d in enumerate(docs)))
    else:
        pd.DataFrame({"text": docs, "id": range(len(docs))}).to_parquet(path)
    return path


def stream_of(tok, docs: list[str]) -> list[int]:
    return [i for d in docs for i in tok(d, add_special_tokens=False,
                                         split_special_tokens=True).input_ids + [tok.eos_token_id]]


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".parquet"])
def test_blocks_are_the_token_stream_cut_into_equal_blocks(tmp_path, tok, suffix):
    write(tmp_path / f"mine{suffix}", DOCS[:2] + ["   "] + DOCS[2:])  # blank doc is dropped
    texts = read_texts("mine", TextSource("local", tmp_path), cache_dir=tmp_path / "hf")
    assert texts.column_names == ["text"] and texts["text"] == DOCS
    blocks = build_blocks(texts, BlockSpec(tok, 16), tmp_path / "blocks")
    ids = blocks["input_ids"]
    stream = stream_of(tok, DOCS)
    assert all(len(block) == 16 for block in ids) and len(ids) == len(stream) // 16
    assert [i for block in ids for i in block] == stream[:len(ids) * 16]
    assert tok.eos_token_id not in stream_of(tok, [DOCS[1]])[:-1]  # "</s>" in text is not EOS


def test_stand_in_file_name_is_found(tmp_path, tok):
    write(tmp_path / "commoncrawl.jsonl", DOCS)
    assert read_texts("pilecc", TextSource("local", tmp_path), cache_dir=tmp_path / "hf")["text"] == DOCS


def test_sampling_is_seeded_nested_and_in_stream_order(tmp_path, tok, caplog):
    write(tmp_path / "c.jsonl", DOCS * 5)
    texts = read_texts("c", TextSource("local", tmp_path), cache_dir=tmp_path / "hf")
    every = build_blocks(texts, BlockSpec(tok, 8), tmp_path / "all")["input_ids"]

    def pick(n, seed, tag):
        return build_blocks(texts, BlockSpec(tok, 8, seed=seed), tmp_path / tag, n)["input_ids"]

    a, again, other, small = pick(20, 1, "a"), pick(20, 1, "b"), pick(20, 2, "c"), pick(10, 1, "d")
    assert a == again and a != other and len(a) == 20
    positions = [every.index(block) for block in a]
    assert positions == sorted(positions)
    assert all(block in a for block in small)
    with caplog.at_level(logging.WARNING):
        assert len(pick(10**6, 0, "e")) == len(every)  # kept whole, never repeated
    assert f"only {len(every)} blocks" in caplog.text


def test_second_call_hits_the_cache(tmp_path, tok):
    write(tmp_path / "bookcorpus.txt", DOCS * 3)
    args = (["bookcorpus"], {"bookcorpus": 3}, BlockSpec(tok, 8), TextSource("local", tmp_path), tmp_path / "cache")
    first = load_pile8(*args)["bookcorpus"]
    second = load_pile8(*args)["bookcorpus"]
    assert first.cache_files == second.cache_files and first["input_ids"] == second["input_ids"]
    assert json.loads((Path(first.cache_files[0]["filename"]).parent / "manifest.json")
                      .read_text())["fields"]["n_blocks"] == 3
    other_n = load_pile8(["bookcorpus"], {"bookcorpus": 5}, *args[2:])["bookcorpus"]
    assert len(other_n) == 5 and other_n.cache_files != first.cache_files
    assert len(list((tmp_path / "cache" / "tokens").iterdir())) == 1  # tokenised once
    assert len(list((tmp_path / "cache" / "blocks").iterdir())) == 2  # one entry per n


@pytest.mark.parametrize("content, expected", [
    ('{"text": "a"}\n{"text": "b"\n', "line 2 is not valid JSON"),
    ('{"body": "a"}\n', "no 'text' field"),
    ('{"text": "a"}\n{"body": "b"}\n', "1 of 2 documents have no 'text' field"),
    ('{"text": 3}\n', "'text' must be a string"),
    ('{"text": "  "}\n{"text": ""}\n', "no non-empty text"),
    ("", "is empty"),
])
def test_bad_jsonl_names_the_file_and_the_fault(tmp_path, content, expected):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(UntracError, match=expected) as err:
        read_texts("bad", TextSource("local", tmp_path), cache_dir=tmp_path / "hf")
    assert "bad.jsonl" in str(err.value) and "\n" not in str(err.value)


def test_missing_file_or_root(tmp_path):
    with pytest.raises(UntracError, match=r"no file in .*wikipedia\.txt.*wikipedia\.jsonl"):
        read_texts("wikipedia", TextSource("local", tmp_path))
    with pytest.raises(UntracError, match="data.root is not set"):
        read_texts("wikipedia", TextSource("local", None))
    write(tmp_path / "x.txt", DOCS)
    write(tmp_path / "x.jsonl", DOCS)
    with pytest.raises(UntracError, match="several files"):
        read_texts("x", TextSource("local", tmp_path))


def test_hub_offline_raises_one_line(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UntracError) as err:
        read_texts("pilecc", TextSource("hub"))
    message = str(err.value)
    assert "pilecc" in message and CORPORA["pilecc"].hub_id in message and "\n" not in message
    assert "set data.source=local data.root=<folder>" in message


def test_hub_stream_is_sampled_and_cached(tmp_path, monkeypatch):
    calls = []

    def fake(path, name=None, split=None, streaming=False):
        calls.append((path, name, split, streaming))
        rows = {"text": [f"doc {i}" for i in range(50)], "meta": ["m"] * 50}
        return datasets.Dataset.from_dict(rows).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake)
    texts = read_texts("gutenberg", TextSource("hub", seed=3), max_docs=7, cache_dir=tmp_path)
    assert calls == [("ArmelR/the-pile-splitted", "Gutenberg (PG-19)", "train", True)]
    assert texts.column_names == ["text"] and len(texts) == 7
    assert set(texts["text"]) <= {f"doc {i}" for i in range(50)}


def test_paper_sizes():
    assert list(CORPORA) == ["bookcorpus", "ccstories", "ccnews", "gutenberg", "hackernews",
                             "openwebtext2", "pilecc", "wikipedia"]
    assert PAPER_SIZES["equal"] == {name: 40_000 for name in CORPORA}
    assert list(PAPER_SIZES["different"]) == list(CORPORA)
    assert sum(PAPER_SIZES["different"].values()) == 320_000 == sum(PAPER_SIZES["equal"].values())


@needs_shared
def test_real_local_corpora_all_load(tmp_path_factory):
    cache = tmp_path_factory.mktemp("pile8")
    root = SHARED / "corpora"
    blocks = load_pile8(list(CORPORA), {name: 8 for name in CORPORA}, BlockSpec(Bytes(), 128),
                        TextSource("local", root), cache)
    assert list(blocks) == list(CORPORA)
    for name, ds in blocks.items():
        ids = np.asarray(ds["input_ids"])
        assert ids.shape == (8, 128), name
        assert ids.min() >= 1 and ids.max() < 259, name
    text = bytes(b - 3 for b in blocks["gutenberg"]["input_ids"][0] if b >= 3)
    assert text.decode("utf-8", "ignore").strip()
