"""The eight pretraining corpora of §5.2 ("pile8"), as fixed-length token blocks.

The paper pretrains OPT-125M from scratch on BookCorpus, CC-Stories, CCNewsV2 and five Pile
subsets (Gutenberg, HackerNews, OpenWebText2, Pile-CC, Wikipedia), 40,000 blocks each or of
different sizes (``PAPER_SIZES``); "each training example consists of a sequence of 1,024 tokens
by grouping several examples into a sequence" (§5.2). Texts come from the hub ids the paper's
code used or from a local folder; blocks are cached under a key of what determines them.
"""

import hashlib
import json
import logging
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import datasets
from datasets import Dataset, Features, List, Value, load_from_disk

from untrac.cache import Cache, make_key
from untrac.errors import UntracError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Corpus:
    """``hub_id``: ``"path"`` or ``"path:config"``, split "train". ``local_file``: the stand-in
    in ``shared/data/corpora`` (SOURCES.md §5). ``hub_docs``: documents the paper's
    ``preprocess_train.py`` sampled before grouping (the larger of its two settings); the hub
    reader streams that many, as the full corpora (Pile-CC: 227 GiB) are too big to download.

    The Pile subsets use the paper code's loader (ArmelR/the-pile-splitted, a config per subset;
    it read "train+test", streaming reads "train"), so Gutenberg and Wikipedia are the Pile's,
    not pg19 / wikipedia. The paper's "bookcorpus" and "cc_news" moved to the ids below."""

    hub_id: str
    local_file: str
    hub_docs: int


_PILE = "ArmelR/the-pile-splitted"
CORPORA: dict[str, Corpus] = {
    "bookcorpus": Corpus("bookcorpus/bookcorpus", "books.jsonl", 4_000_000),
    "ccstories": Corpus("lucadiliello/STORIES", "stories.jsonl", 10_000),
    "ccnews": Corpus("vblagoje/cc_news", "news.jsonl", 200_000),
    "gutenberg": Corpus(f"{_PILE}:Gutenberg (PG-19)", "gutenberg.jsonl", 1_000),
    "hackernews": Corpus(f"{_PILE}:HackerNews", "hackernews.jsonl", 100_000),
    "openwebtext2": Corpus(f"{_PILE}:OpenWebText2", "webtext.jsonl", 200_000),
    "pilecc": Corpus(f"{_PILE}:Pile-CC", "commoncrawl.jsonl", 200_000),
    "wikipedia": Corpus(f"{_PILE}:Wikipedia (en)", "wikipedia.jsonl", 100_000),
}

PAPER_SIZES: dict[str, dict[str, int]] = {  # blocks per corpus in the two settings of §5.2
    "equal": {name: 40_000 for name in CORPORA},
    "different": {"bookcorpus": 32_000, "ccstories": 32_000, "ccnews": 48_000,
                  "gutenberg": 16_000, "hackernews": 16_000, "openwebtext2": 64_000,
                  "pilecc": 96_000, "wikipedia": 16_000},  # in CORPORA's order
}


@dataclass(frozen=True)
class TextSource:
    """Where documents come from (``data.source``, ``data.root``, ``data.seed``): ``kind`` "local",
    a file per corpus in ``root`` (``find_local_file``), or "hub", streamed and shuffled with ``seed``."""

    kind: str
    root: str | Path | None = None
    seed: int = 0


@dataclass(frozen=True)
class BlockSpec:
    """How documents become blocks (§5.2): ``tokenizer`` (no special tokens, its EOS after each
    document), ``block_size`` tokens per block, ``seed`` of a sample of fewer blocks than the stream
    holds, ``num_proc`` tokenising processes (None: this one)."""

    tokenizer: Any
    block_size: int
    seed: int = 0
    num_proc: int | None = None


LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
_PROBE = "Probe: Hello, world!  Ünïcödé 123\n\tend."  # fingerprints a tokenizer's behaviour


def find_local_file(name: str, root: str | Path | None) -> Path:
    """``<root>/<name>.{txt,jsonl,parquet}``, else the stand-in file named in ``CORPORA``."""
    if root is None:
        raise UntracError(f"corpus {name!r}: data.root is not set (needed for data.source=local)")
    tried = [f"{name}{suffix}" for suffix in LOCAL_SUFFIXES]
    found = [Path(root, file) for file in tried if Path(root, file).is_file()]
    if len(found) > 1:
        raise UntracError(f"corpus {name!r}: several files in {root}: {[p.name for p in found]}")
    if not found and name in CORPORA:
        tried.append(CORPORA[name].local_file)
        found = [Path(root, tried[-1])] if Path(root, tried[-1]).is_file() else []
    if not found:
        raise UntracError(f"corpus {name!r}: no file in {root} (looked for {', '.join(tried)})")
    return found[0]


def read_texts(name: str, source: TextSource, *, hub_id: str | None = None, max_docs: int | None = None,
               cache_dir: str | Path | None = None) -> Dataset:
    """The non-empty documents of one corpus, as a Dataset with a single ``text`` column.

    Local (in ``source.root``): ``.txt`` holds one document per paragraph (separated by an empty
    line; datasets' text loader, ``sample_by="paragraph"``), ``.jsonl`` a JSON object per line with
    a string ``text``, ``.parquet`` a string ``text`` column. Hub (``hub_id`` defaults to
    ``CORPORA``'s): streamed, shuffled (``source.seed``, buffer 10,000), cut at ``max_docs``
    (default: the paper's count).
    Whitespace-only documents are dropped, so an EOS never stands alone. ``cache_dir``: where
    datasets writes its Arrow files (None: its default cache)."""
    cache = None if cache_dir is None else str(cache_dir)
    if source.kind == "local":
        where = find_local_file(name, source.root)
        texts = _read_local(where, cache)
    elif source.kind == "hub":
        spec = CORPORA.get(name)
        if hub_id is None and spec is None:
            raise UntracError(f"corpus {name!r}: unknown; no hub id (known: {', '.join(CORPORA)})")
        where = hub_id = hub_id or spec.hub_id
        docs = max_docs if max_docs is not None else (spec.hub_docs if spec else None)
        texts = _read_hub(name, hub_id, docs, source.seed, cache)
    else:
        raise UntracError(f"corpus {name!r}: data.source must be 'local' or 'hub', not {source.kind!r}")
    texts = texts.filter(lambda batch: [bool(text and text.strip()) for text in batch],
                         batched=True, input_columns="text", desc=f"{name}: non-empty")
    if len(texts) == 0:
        raise UntracError(f"corpus {name!r}: no non-empty text in {where}")
    return texts


def _read_local(path: Path, cache: str | None) -> Dataset:
    try:
        if path.suffix == ".txt":
            texts = datasets.load_dataset("text", data_files=str(path), split="train",
                                          sample_by="paragraph", cache_dir=cache)
        elif path.suffix == ".jsonl":
            texts = Dataset.from_json(str(path), cache_dir=cache)
        else:
            texts = Dataset.from_parquet(str(path), cache_dir=cache)
    except Exception as err:  # datasets wraps parse errors; say which line is at fault
        raise UntracError(f"{path}: {_diagnose(path, err)}") from err
    if "text" not in texts.column_names:
        raise UntracError(f"{path}: no 'text' field (fields: {', '.join(texts.column_names)})")
    if texts.features["text"] not in (Value("string"), Value("large_string")):
        raise UntracError(f"{path}: 'text' must be a string, found {texts.features['text']}")
    if missing := texts.data.column("text").null_count:
        raise UntracError(f"{path}: {missing} of {len(texts)} documents have no 'text' field")
    return texts.select_columns(["text"])


def _diagnose(path: Path, err: Exception) -> str:
    """A one-line reason a local file failed to load: the first bad JSON line when there is one."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8", errors="replace") as lines:
            numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
        for number, line in numbered:
            try:
                json.loads(line)
            except json.JSONDecodeError as bad:
                return f"line {number} is not valid JSON ({bad.msg})"
        if not numbered:
            return "is empty"
    cause = err.__cause__ or err
    return f"cannot be read ({type(cause).__name__}: {_one_line(cause)})"


def _read_hub(name: str, hub_id: str, docs: int | None, seed: int, cache: str | None) -> Dataset:
    path, _, config = hub_id.partition(":")
    fingerprint = _digest({"hub_id": hub_id, "docs": docs, "seed": seed})[:16]
    try:
        stream = datasets.load_dataset(path, config or None, split="train", streaming=True)
        stream = stream.select_columns(["text"]).shuffle(seed=seed, buffer_size=10_000)
        if docs is not None:
            stream = stream.take(docs)
        return Dataset.from_generator(lambda: iter(stream), cache_dir=cache,
                                      features=Features({"text": Value("string")}),
                                      fingerprint=fingerprint)
    except Exception as err:  # offline, unknown id, gated, no text column: all fixed the same way
        raise UntracError(
            f"corpus {name!r}: cannot load hub dataset {hub_id!r} "
            f"({type(err).__name__}: {_one_line(err)}); set data.source=local data.root=<folder>"
        ) from err


def build_blocks(texts: Dataset, spec: BlockSpec, out_dir: Path, n_blocks: int | None = None) -> Dataset:
    """Tokenise, concatenate and cut into blocks of exactly ``spec.block_size`` int32 ``input_ids``.

    Documents get no special tokens (a literal ``</s>`` in them stays text), each is followed by
    EOS; blocks cross documents as in the paper's grouping (§5.2); only the stream's last partial
    block is dropped. ``texts`` may be a token stream already (``input_ids``). ``n_blocks``: a
    seeded sample (``spec.seed``) in stream order (a smaller n's is a subset of a larger n's);
    fewer blocks are kept whole, never repeated, with a warning. Saved to ``out_dir`` (a cache entry's temporary
    folder) and returned memory-mapped from there, not held in RAM."""
    out_dir, block_size = Path(out_dir), spec.block_size
    if block_size < 1 or (n_blocks is not None and n_blocks < 1):
        raise UntracError(f"{out_dir.name}: block_size and n_blocks must be >= 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".work.", dir=out_dir.parent, ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        tokens = texts if "input_ids" in texts.column_names else _tokenize_into(texts, spec, work)
        # One flat, memory-mapped token stream: flattening a list chunk is zero-copy.
        chunks = tokens.data.column("input_ids").chunks
        stream = pa.chunked_array([chunk.flatten() for chunk in chunks], type=pa.int32())
        total = len(stream) // block_size
        if total == 0:
            raise UntracError(f"{out_dir.name}: {len(stream)} tokens < 1 block of {block_size}")
        order = np.arange(total)
        if n_blocks is not None:
            if n_blocks > total:
                log.warning("%s: only %d blocks of %d tokens, asked for %d; keeping all %d",
                            out_dir.name, total, block_size, n_blocks, total)
            order = np.sort(np.random.default_rng(spec.seed).permutation(total)[:n_blocks])
        blocks = Dataset.from_dict({"block": order}).map(
            lambda batch: {"input_ids": [stream.slice(k * block_size, block_size).to_numpy()
                                         for k in batch["block"]]},
            batched=True, remove_columns=["block"],
            features=Features({"input_ids": List(Value("int32"), length=block_size)}),
            cache_file_name=str(work / "blocks.arrow"), new_fingerprint=uuid.uuid4().hex,
            desc=f"{out_dir.name}: {len(order)} blocks",
        )
        blocks.save_to_disk(str(out_dir))
    return load_from_disk(str(out_dir))


def _tokenize_into(texts: Dataset, spec: BlockSpec, work: Path) -> Dataset:
    tokenizer = spec.tokenizer
    if (eos := tokenizer.eos_token_id) is None:
        raise UntracError(f"tokenizer {type(tokenizer).__name__} has no EOS token to end documents")

    def tokenize(batch: dict) -> dict:
        ids = tokenizer(batch["text"], add_special_tokens=False, split_special_tokens=True,
                        verbose=False)["input_ids"]
        return {"input_ids": [doc + [eos] for doc in ids]}

    # Our cache keys decide reuse; a random fingerprint spares datasets hashing the tokenizer.
    return texts.select_columns(["text"]).map(
        tokenize, batched=True, remove_columns=["text"], num_proc=spec.num_proc,
        features=Features({"input_ids": List(Value("int32"))}),
        cache_file_name=str(work / "tokens.arrow"), new_fingerprint=uuid.uuid4().hex,
        desc="tokenise",
    )


def load_pile8(names, sizes: dict[str, int] | None, spec: BlockSpec, source: TextSource,
               cache_dir: Path) -> dict[str, Dataset]:
    """Blocks of each named corpus, in the order given, made by ``spec`` from the texts of ``source``;
    ``sizes`` (blocks per corpus) None keeps every block.

    Cached (``untrac.cache``) as ``blocks`` entries keyed by what determines the blocks:
    tokenizer (class, name, size, EOS, ids of a probe text), block size, n, seed, source, and
    the hub id or the local root, file, size and mtime. The token stream is a ``tokens`` entry
    of its own, so another n or seed only re-samples."""
    cache, out = Cache(cache_dir), {}
    for name in names:
        if sizes is not None and name not in sizes:
            raise UntracError(f"corpus {name!r}: no size given (sizes has {', '.join(sizes)})")
        stream = {"name": name, "tokenizer": tokenizer_fingerprint(spec.tokenizer),
                  "source": source.kind, "format": 1}
        if source.kind == "local":
            path = find_local_file(name, source.root).resolve()
            stream |= {"root": str(Path(source.root).resolve()), "file": str(path),
                       "bytes": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns}
        elif source.kind == "hub" and name in CORPORA:  # the hub sample depends on the seed too
            stream |= {"hub_id": CORPORA[name].hub_id, "docs": CORPORA[name].hub_docs, "seed": source.seed}
        fields = stream | {"block_size": spec.block_size, "seed": spec.seed,
                           "n_blocks": None if sizes is None else int(sizes[name])}
        if not cache.has("blocks", make_key(fields)):

            def write_tokens(tmp: Path) -> None:
                texts = read_texts(name, source, cache_dir=Path(cache_dir) / "hf")
                with cache.scratch() as work:
                    _tokenize_into(texts, spec, Path(work)).save_to_disk(str(tmp))

            tokens = load_from_disk(str(cache.build("tokens", stream, write_tokens)))
            cache.build("blocks", fields, lambda tmp: build_blocks(tokens, spec, tmp, fields["n_blocks"]))
        out[name] = load_from_disk(str(cache.path("blocks", make_key(fields))))
        log.info("corpus %s: %d blocks of %d tokens", name, len(out[name]), spec.block_size)
    return out


def tokenizer_fingerprint(tokenizer) -> dict:
    """What identifies a tokenizer's output, for cache keys (ByT5 has no name, so probe it)."""
    probe = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    return {"class": type(tokenizer).__name__, "size": len(tokenizer),
            "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
            "eos": tokenizer.eos_token_id, "probe": _digest({"ids": list(probe)})[:16]}


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200]  # error messages stay on one line
