"""Your own data: training datasets (``data=files``) and test subsets (``testset=files``) from local files.

A source is a ``.jsonl``/``.json``, ``.csv`` (every cell read as text), ``.parquet`` or ``.txt`` file
or a ``datasets.save_to_disk`` folder (``untrac.data.reading``, which also defines each row's
number). Datasets are named one per source (``{name: file}``) or by the values of a column of one
file (``path`` + ``group_column``). A row is a prompt/target pair (the loss counts the target) when
both those columns exist, else a text (every token counts; in a test subset the pair ("", text)).

One row is one example: a causal model reads prompt + ``separator`` + target; a row longer than
``data.max_length`` tokens is cut at it (a pair: its target's tail is not scored) or, a training
text, chunked within the row (``collate.encode_texts``). Every example carries its row's number
(column ``row``), which ``examples.csv`` reports. A missing, null or blank target (or text), a CSV
row with too few or too many fields, a byte that is not UTF-8 and a line that is not JSON are each
refused in one line naming the file and the row. Training datasets are tokenised once per file and
settings and cached (``Cache``, keyed by the file's identity, the tokenizer and the settings).
"""

import json
import logging
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import Dataset

from untrac.arch import Arch
from untrac.cache import Cache, identity
from untrac.config import DataConfig, TestsetConfig
from untrac.data import Pair
from untrac.data.collate import IGNORE, encode_pairs, encode_texts
from untrac.data.corpora import tokenizer_fingerprint
from untrac.data.reading import Rows, read
from untrac.errors import UntracError

log = logging.getLogger(__name__)

FORMAT = 1  # of the tokenised cache entries: bump when what they hold changes
# transformers' run_clm.py: with no --block_size, block_size = min(1024, max_position_embeddings).
MAX_LENGTH_CAP = 1024
SHOWN = 5  # row numbers listed in a message about several rows


@dataclass
class Source:
    """The rows of one named dataset as pairs, each row's number, and where they come from."""

    pairs: list[Pair]
    rows: list[int]
    form: str  # pairs | text
    where: str
    unit: str  # "one per row", "one per line", "one per paragraph"
    noun: str = "line"  # what a row's number counts: line, row or item (untrac.data.reading)


@dataclass(frozen=True)
class Tokenisation:
    """How rows become examples (``encode_source``): the model's ``tokenizer`` and ``arch`` (its kind
    and EOS), at most ``max_length`` tokens per example (``max_length()``) and the ``separator`` a
    causal model reads between prompt and target (``separator()``)."""

    tokenizer: Any
    arch: Arch
    max_length: int
    separator: str


def file_sources(file: str, setting: str, cfg: DataConfig | TestsetConfig, group: str,
                 group_column: str | None = None) -> dict[str, Source]:
    """The checked rows of one file (``setting`` names it: ``data.train.news``), as one Source (key "")
    or one per value of ``group_column``."""
    if not Path(file).exists():
        raise UntracError(f"{setting}: {file} not found")
    where = f"{setting} ({file})"
    rows = read(file, where, cfg.txt_unit, cfg.text_column)
    form = row_form(rows, cfg, where, group)
    if form == "pairs":
        prompts = [p or "" for p in _text_values(rows, cfg.prompt_column, where, may_be_blank=True)]
        pairs = list(zip(prompts, _text_values(rows, cfg.target_column, where)))
    else:
        pairs = [("", text) for text in _text_values(rows, cfg.text_column, where)]
    unit = f"one per {cfg.txt_unit}" if Path(file).suffix.lower() == ".txt" else "one per row"
    if group_column is None:
        return {"": Source(pairs, rows.numbers, form, where, unit, rows.unit)}
    _require(rows, [group_column], where, f"{group}.group_column")
    groups: dict[str, list[int]] = {}
    for index, value in enumerate(rows.columns[group_column]):
        if value is None or not str(value).strip():
            _refuse_blank(rows, group_column, where)
        groups.setdefault(str(value), []).append(index)
    return {name: Source([pairs[i] for i in indices], [rows.numbers[i] for i in indices], form,
                         f"{where} {group_column}={name}", unit, rows.unit) for name, indices in groups.items()}


def row_form(rows: Rows, cfg: DataConfig | TestsetConfig, where: str, group: str) -> str:
    """``pairs`` when the prompt or the target column exists (then both must), else ``text``."""
    if cfg.prompt_column in rows.columns or cfg.target_column in rows.columns:
        _require(rows, [cfg.prompt_column, cfg.target_column], where, f"{group}.prompt_column/{group}.target_column")
        return "pairs"
    _require(rows, [cfg.text_column], where, f"{group}.text_column (or {group}.prompt_column/{group}.target_column)")
    return "text"


def _require(rows: Rows, columns: list[str], where: str, setting: str) -> None:
    if missing := [column for column in columns if column not in rows.columns]:
        raise UntracError(f"{where}: no column {', '.join(map(repr, missing))} (columns: "
                          f"{', '.join(rows.columns)}); set {setting}")


def _text_values(rows: Rows, column: str, where: str, may_be_blank: bool = False) -> list[str | None]:
    """The column's values, refusing one that is not text and, unless ``may_be_blank``, one that is
    missing, null, empty or only whitespace (nothing to learn or score; it would rank as a top example)."""
    values = rows.columns[column]
    for index, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise UntracError(f"{where}: {rows.at(index)}: {column!r} must hold text, found "
                              f"{type(value).__name__} {str(value)[:40]!r}")
    if not may_be_blank and any(value is None or not value.strip() for value in values):
        _refuse_blank(rows, column, where)
    return values


def _refuse_blank(rows: Rows, column: str, where: str) -> None:
    values = rows.columns[column]
    bad = [i for i, value in enumerate(values) if value is None or not str(value).strip()]
    first = bad[0]
    message = f"{where}: {rows.at(first)}: " + (f"no {column!r} (missing or null)" if values[first] is None
                                                 else f"empty {column!r}")
    if len(bad) > 1:
        shown = ", ".join(str(rows.numbers[i]) for i in bad[:SHOWN]) + (", …" if len(bad) > SHOWN else "")
        message += f"; {len(bad)} rows have no or an empty {column!r} ({rows.unit}s {shown})"
    raise UntracError(message)


def named_sources(cfg: DataConfig | TestsetConfig, group: str, key: str, label: str) -> dict[str, Source]:
    """Name -> Source for ``{group}.{key}={name: file}`` (``cfg.<key>``) and for the groups of
    ``{group}.path`` (``cfg.path`` split by ``cfg.group_column``); ``label`` names a source in errors."""
    out: dict[str, Source] = {}
    for name, file in getattr(cfg, key).items():
        _add(out, str(name), file_sources(file, f"{group}.{key}.{name}", cfg, group)[""], label)
    if cfg.path:
        for name, source in file_sources(cfg.path, f"{group}.path", cfg, group, cfg.group_column).items():
            _add(out, name, source, label)
    return out


def _add(out: dict, name: str, item, label: str) -> None:
    if name in out:
        raise UntracError(f"{label} name {name!r} is used twice: by {_where(out[name])} and by {_where(item)}")
    out[name] = item


def _where(item) -> str:
    return item.where if isinstance(item, Source) else item["where"]


def separator(value: str) -> str:
    """``data.separator`` / ``testset.separator`` with ``\\n`` and ``\\t`` read as a newline and a tab:
    Hydra keeps a command line's ``data.separator='\\n'`` as a backslash and an n."""
    return value.replace("\\n", "\n").replace("\\t", "\t")


def max_length(cfg: DataConfig, arch) -> int:
    """``data.max_length``, or by default the model's positions capped as run_clm.py caps block_size;
    a value the user set larger than the model's positions is refused."""
    if cfg.max_length is None:
        return min(arch.max_length, MAX_LENGTH_CAP)
    if cfg.max_length > arch.max_length:
        raise UntracError(f"data.max_length={cfg.max_length} exceeds the model's {arch.max_length} positions; set "
                          f"data.max_length<={arch.max_length} or leave it null (the model's own, "
                          f"at most {MAX_LENGTH_CAP})")
    return cfg.max_length


def encode_source(source: Source, how: Tokenisation) -> tuple[Dataset, int]:
    """One example per row (``input_ids``, ``labels``, ``row``), and how many rows were chunked."""
    tokenizer, arch, length = how.tokenizer, how.arch, how.max_length
    if source.form == "text":
        if arch.kind != "causal":
            raise UntracError(f"{source.where}: text rows train a causal model; a seq2seq model needs prompt/target "
                              "columns (data.prompt_column/data.target_column) or use a causal model")
        columns, owners = encode_texts(tokenizer, [t for _, t in source.pairs], arch, length)
        chunked = int((np.bincount(owners) > 1).sum())
        return Dataset.from_dict({**columns, "row": [source.rows[o] for o in owners]}), chunked
    encoded = encode_pairs(tokenizer, source.pairs, arch, length, how.separator)
    if arch.kind == "causal":
        if lost := [i for i, labels in enumerate(encoded["labels"]) if all(t == IGNORE for t in labels)]:
            raise UntracError(f"{source.where}: {source.noun} {source.rows[lost[0]]}: the prompt fills all "
                              f"{length} tokens (data.max_length), leaving no target token to score"
                              f"{f' ({len(lost)} rows like it)' if len(lost) > 1 else ''}; shorten the prompt or raise "
                              "data.max_length")
    return encoded.add_column("row", source.rows), 0


def load_train(cfg: DataConfig, tokenizer, arch, cache_dir: Path) -> dict[str, Dataset]:
    """The tokenised training datasets of ``data=files``, one example per row (chunks of a long text row),
    each file read and tokenised once per settings and tokenizer, then served from the cache."""
    default_block = next(f.default for f in fields(DataConfig) if f.name == "block_size")
    if cfg.block_size != default_block:
        raise UntracError(f"data.block_size={cfg.block_size} is pile8's (blocks across documents); data=files keeps "
                          "one row per example: set data.max_length instead")
    how = Tokenisation(tokenizer, arch, max_length(cfg, arch), separator(cfg.separator))
    length = how.max_length
    cache = Cache(Path(cache_dir) / "files")
    files = [(f"data.train.{name}", file, None, str(name)) for name, file in cfg.train.items()]
    if cfg.path:
        files.append(("data.path", cfg.path, cfg.group_column, None))
    settings = {"columns": [cfg.text_column, cfg.prompt_column, cfg.target_column],
                "separator": how.separator, "txt_unit": cfg.txt_unit, "max_length": length,
                "tokenizer": tokenizer_fingerprint(tokenizer), "bos": tokenizer.bos_token_id,
                "arch": [arch.kind, arch.eos_id], "format": FORMAT}
    out, found = {}, {}
    for setting, file, group_column, name in files:
        where = f"{setting} ({file})"
        if not Path(file).exists():  # before identity(), which needs the file
            raise UntracError(f"{setting}: {file} not found")
        fields_ = {"file": identity(file), "group_column": group_column, **settings}
        entry = cache.build("tokenised", fields_, lambda tmp, f=file, s=setting, g=group_column:
                            _tokenise(f, s, g, cfg, how, tmp))
        for item in json.loads((entry / "datasets.json").read_text()):
            item = {**item, "path": str(entry / item["folder"]),
                    "where": where if name is not None else f"{where} {group_column}={item['name']}"}
            _add(found, name if name is not None else item["name"], item, "training dataset")
    for dataset, item in found.items():
        out[dataset] = datasets.load_from_disk(item["path"])
        chunks = (f"; {item['chunked']} row{'s' * (item['chunked'] > 1)} longer than {length} tokens "
                  "(data.max_length) chunked within the row"
                  if item["chunked"] else "")
        log.info("training dataset %s, %s: %d rows, %d examples (%s%s)", dataset, item["where"], item["rows"],
                 len(out[dataset]), item["unit"], chunks)
    forms = {name: item["form"] for name, item in found.items()}
    if len(set(forms.values())) > 1:
        by_form = {form: [name for name, f in forms.items() if f == form] for form in ("pairs", "text")}
        raise UntracError(f"training datasets mix prompt/target rows ({', '.join(by_form['pairs'])}) and text rows "
                          f"({', '.join(by_form['text'])}): give every dataset the same columns")
    return out


def _tokenise(file: str, setting: str, group_column: str | None, cfg: DataConfig, how: Tokenisation,
              tmp: Path) -> None:
    """A cache entry: one save_to_disk folder per dataset of ``file``, listed in datasets.json."""
    listed = []
    for k, (name, source) in enumerate(file_sources(file, setting, cfg, "data", group_column).items()):
        encoded, chunked = encode_source(source, how)
        if len(encoded) == 0:  # not for a checked file; kept because an empty dataset would fail only after θ0 trained
            raise UntracError(f"{source.where}: no examples")
        encoded.save_to_disk(str(tmp / f"d{k}"))
        listed.append({"name": name, "folder": f"d{k}", "form": source.form,
                       "rows": len(source.rows), "chunked": chunked, "unit": source.unit})
    (tmp / "datasets.json").write_text(json.dumps(listed))


def load_test(cfg: TestsetConfig, seed: int, cache_dir: Path | None = None) -> dict[str, list[Pair]]:
    """The test subsets of ``testset=files`` as pairs, at most ``per_subset`` each (seeded, file order)."""
    sources = named_sources(cfg, "testset", "subsets", "test subset")
    out = {}
    for name, source in sources.items():
        pairs = source.pairs
        if len(pairs) > cfg.per_subset:  # a stream per subset, so one subset's size moves no other
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            pairs = [pairs[i] for i in np.sort(rng.choice(len(pairs), cfg.per_subset, replace=False))]
            log.info("test subset %s: %d of its %d rows sampled (testset.per_subset)", name, cfg.per_subset,
                     len(source.pairs))
        log.info("test subset %s, %s: %d examples (%s)", name, source.where, len(pairs), source.unit)
        out[name] = pairs
    return out


def files_key(cfg: DataConfig) -> dict:
    """What identifies ``data=files``' sources on disk, for the cache keys of trained models."""
    named = {name: identity(file) if Path(file).exists() else file for name, file in cfg.train.items()}
    return {"train_files": named, "path_file": identity(cfg.path) if cfg.path and Path(cfg.path).exists() else cfg.path}
