"""Your own data: training datasets (``data=files``) and test subsets (``testset=files``) from local files.

A source is a ``.jsonl``/``.json`` (JSON lines), ``.csv`` (every column read as text), ``.parquet``
or ``.txt`` file (one row per paragraph, as pile8's local files), or a folder written by
``datasets.save_to_disk``; all are read with ``datasets`` (``load_dataset``, cached under the run's
cache folder). Datasets are named one per source (``{name: file}``) or by the values of a column of
one file (``path`` + ``group_column``). A row is a prompt/target pair (the loss counts the target)
when both those columns exist, else a text: for training, texts are tokenised and cut into
``data.block_size``-token blocks for causal models as pile8 is; in test subsets a text is the pair
("", text), every token counting, as ToxiGen's are.
"""

import csv
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from datasets import Dataset, Features, Value

from untrac.cache import Cache, identity
from untrac.config import DataConfig, TestsetConfig
from untrac.data import Pair
from untrac.data.collate import encode_pairs
from untrac.data.corpora import build_blocks, tokenizer_fingerprint
from untrac.errors import UntracError

log = logging.getLogger(__name__)

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
TEXT_TYPES = (Value("string"), Value("large_string"))


def read_rows(path: str | Path, where: str, cache_dir: Path | None = None, text_column: str = "text") -> Dataset:
    """Every row of one file or ``save_to_disk`` folder; ``where`` (the config key) prefixes errors.
    A ``.txt`` file's one column is named ``text_column``, as the other files' texts are."""
    path = Path(path)
    if path.is_dir():
        return _read_saved(path, where)
    if not path.is_file():
        raise UntracError(f"{where}: {path} not found")
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise UntracError(f"{where}: {path} has an unknown format (use {', '.join(BUILDERS)} or a "
                          "datasets.save_to_disk folder)")
    if path.stat().st_size == 0:
        raise UntracError(f"{where}: {path} has no rows (the file is empty)")
    options = {"sample_by": "paragraph"} if builder == "text" else {}
    if builder == "csv":  # read every column as text: "007" stays "007", an empty cell stays ""
        with open(path, newline="", encoding="utf-8", errors="replace") as lines:
            header = next(csv.reader(lines), [])
        options = {"features": Features({name: Value("string") for name in header}),
                   "keep_default_na": False}
    try:
        rows = datasets.load_dataset(builder, data_files=str(path), split="train",
                                     cache_dir=None if cache_dir is None else str(cache_dir), **options)
    except Exception as err:  # noqa: BLE001 - datasets raises many types for a bad file
        if "corresponds to no data" in str(err) or isinstance(err, StopIteration):
            raise UntracError(f"{where}: {path} has no rows") from err
        cause = err.__cause__ or err
        reason = " ".join(f"{type(cause).__name__}: {cause}".split())[:200]
        raise UntracError(f"{where}: {path} cannot be read as {builder} ({reason})") from err
    if len(rows) == 0:
        raise UntracError(f"{where}: {path} has no rows")
    return rows.rename_column("text", text_column) if builder == "text" and text_column != "text" else rows


def _read_saved(path: Path, where: str) -> Dataset:
    try:
        saved = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - not a save_to_disk folder, or a damaged one
        if _saved_without_data(path):  # datasets saves an empty dataset but cannot load it back
            raise UntracError(f"{where}: {path} has no rows") from err
        raise UntracError(f"{where}: {path} is a folder but not one written by datasets.save_to_disk "
                          f"({type(err).__name__})") from err
    if isinstance(saved, datasets.DatasetDict):
        splits = list(saved)
        if "train" not in saved and len(splits) != 1:
            raise UntracError(f"{where}: {path} holds splits {', '.join(splits)}; save one split or a 'train' split")
        saved = saved["train" if "train" in saved else splits[0]]
    if len(saved) == 0:
        raise UntracError(f"{where}: {path} has no rows")
    return saved


@dataclass
class Source:
    """The rows of one named dataset, where they come from (for messages) and the file (for keys)."""

    rows: Dataset
    where: str
    file: str


def _saved_without_data(path: Path) -> bool:
    try:
        return json.loads((path / "state.json").read_text()).get("_data_files") == []
    except (OSError, ValueError, AttributeError):
        return False


def named_sources(named: dict[str, str], path: str | None, group_column: str | None, group: str, key: str,
                  label: str, text_column: str, cache_dir: Path | None = None) -> dict[str, Source]:
    """Name -> Source for ``{group}.{key}={name: file}`` and for the groups of ``{group}.path``."""
    out: dict[str, Source] = {}

    def add(name: str, source: Source) -> None:
        if name in out:
            raise UntracError(f"{label} name {name!r} is used twice: by {out[name].where} and by {source.where}")
        out[name] = source

    for name, file in named.items():
        rows = read_rows(file, f"{group}.{key}.{name}", cache_dir, text_column)
        add(str(name), Source(rows, f"{group}.{key}.{name} ({file})", file))
    if path:
        groups = split_by_column(read_rows(path, f"{group}.path", cache_dir, text_column), group_column,
                                 f"{group}.path ({path})", f"{group}.group_column")
        for name, rows in groups.items():
            add(name, Source(rows, f"{path} ({group_column}={name})", path))
    return out


def split_by_column(rows: Dataset, column: str, where: str, setting: str) -> dict[str, Dataset]:
    """The rows of each value of ``column``, in order of first appearance (file order within)."""
    _require(rows, [column], where, setting)
    if missing := rows.data.column(column).null_count:
        raise UntracError(f"{where}: {missing} of {len(rows)} rows have no {column!r} value")
    values = rows.data.column(column).to_pylist()
    groups: dict[str, list[int]] = {}
    for index, value in enumerate(values):
        groups.setdefault(str(value), []).append(index)
    return {name: rows.select(indices) for name, indices in groups.items()}


def row_form(rows: Dataset, text: str, prompt: str, target: str, where: str, group: str) -> str:
    """``pairs`` when both the prompt and the target column exist, else ``text``; checks the columns."""
    present = set(rows.column_names)
    if prompt in present or target in present:
        _require(rows, [prompt, target], where, f"{group}.prompt_column/{group}.target_column")
        _require_text(rows, [prompt, target], where)
        return "pairs"
    _require(rows, [text], where, f"{group}.text_column (or {group}.prompt_column/{group}.target_column)")
    _require_text(rows, [text], where)
    return "text"


def _require(rows: Dataset, columns: list[str], where: str, setting: str) -> None:
    if missing := [column for column in columns if column not in rows.column_names]:
        raise UntracError(f"{where}: no column {', '.join(map(repr, missing))} (columns: "
                          f"{', '.join(rows.column_names)}); set {setting}")


def _require_text(rows: Dataset, columns: list[str], where: str) -> None:
    for column in columns:
        if rows.features[column] not in TEXT_TYPES:
            raise UntracError(f"{where}: column {column!r} must hold text, found {rows.features[column]}")
        if missing := rows.data.column(column).null_count:
            raise UntracError(f"{where}: {missing} of {len(rows)} rows have no {column!r} value")


def non_blank(rows: Dataset, column: str, where: str) -> Dataset:
    """Rows whose text is not blank (a blank text has nothing to learn or score); none left is an error."""
    rows = rows.filter(lambda batch: [bool(t.strip()) for t in batch], batched=True, input_columns=column,
                       desc="non-blank texts")
    if len(rows) == 0:
        raise UntracError(f"{where}: every {column!r} value is empty")
    return rows


def to_pairs(rows: Dataset, form: str, text: str, prompt: str, target: str) -> list[Pair]:
    """(prompt, target) per row; a text row is ("", text): every token counts."""
    if form == "text":
        return [("", value) for value in rows[text]]
    return list(zip(rows[prompt], rows[target]))


def load_train(cfg: DataConfig, tokenizer, arch, cache_dir: Path) -> dict[str, Dataset]:
    """The tokenised training datasets of ``data=files``: pairs for encode_pairs, texts as blocks."""
    cache_dir = Path(cache_dir) / "files"
    sources = named_sources(cfg.train, cfg.path, cfg.group_column, "data", "train", "training dataset",
                            cfg.text_column, cache_dir / "hf")
    forms = {name: row_form(s.rows, cfg.text_column, cfg.prompt_column, cfg.target_column, s.where, "data")
             for name, s in sources.items()}
    if len(set(forms.values())) > 1:
        by_form = {form: [name for name, f in forms.items() if f == form] for form in ("pairs", "text")}
        raise UntracError(f"training datasets mix prompt/target rows ({', '.join(by_form['pairs'])}) and text rows "
                          f"({', '.join(by_form['text'])}): give every dataset the same columns")
    out = {}
    for name, source in sources.items():
        if forms[name] == "pairs":
            pairs = to_pairs(source.rows, "pairs", cfg.text_column, cfg.prompt_column, cfg.target_column)
            out[name] = encode_pairs(tokenizer, pairs, arch)
        else:
            out[name] = text_blocks(name, source, cfg, tokenizer, arch, cache_dir)
        log.info("training dataset %s: %d %s from %s", name, len(out[name]),
                 "examples" if forms[name] == "pairs" else f"blocks of {cfg.block_size} tokens", source.where)
    return out


def text_blocks(name: str, source: Source, cfg: DataConfig, tokenizer, arch, cache_dir: Path) -> Dataset:
    """Texts → ``block_size``-token blocks (``corpora.build_blocks``), cached by file identity."""
    rows, where = source.rows, source.where
    if arch.kind != "causal":
        raise UntracError(f"{where}: text rows train a causal model on token blocks; a seq2seq model needs "
                          f"prompt/target columns (data.prompt_column/data.target_column) or use a causal model")
    if cfg.block_size > arch.max_length:
        raise UntracError(f"data.block_size={cfg.block_size} exceeds the model's {arch.max_length} positions; "
                          f"set data.block_size<={arch.max_length}")
    texts = non_blank(rows.select_columns([cfg.text_column]), cfg.text_column, where)
    if cfg.text_column != "text":
        texts = texts.rename_column(cfg.text_column, "text")
    fields = {"name": name, "source": identity(source.file), "where": source.where, "text_column": cfg.text_column,
              "tokenizer": tokenizer_fingerprint(tokenizer), "block_size": cfg.block_size, "format": 1}

    def write(tmp: Path) -> None:
        try:  # a subfolder named after the dataset, so build_blocks' messages name it
            build_blocks(texts, tokenizer, cfg.block_size, None, 0, tmp / "blocks" / name)
        except UntracError as err:
            raise UntracError(f"training dataset {err} ({where}); lower data.block_size") from err

    entry = Cache(cache_dir).build("blocks", fields, write)
    return datasets.load_from_disk(str(entry / "blocks" / name))


def load_test(cfg: TestsetConfig, seed: int, cache_dir: Path) -> dict[str, list[Pair]]:
    """The test subsets of ``testset=files`` as pairs, at most ``per_subset`` each (seeded, file order)."""
    sources = named_sources(cfg.subsets, cfg.path, cfg.group_column, "testset", "subsets", "test subset",
                            cfg.text_column, Path(cache_dir) / "files" / "hf")
    out = {}
    for name, source in sources.items():
        rows = source.rows
        form = row_form(rows, cfg.text_column, cfg.prompt_column, cfg.target_column, source.where, "testset")
        if form == "text":
            rows = non_blank(rows, cfg.text_column, source.where)
        if len(rows) > cfg.per_subset:  # a stream per subset, so one subset's size moves no other
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            rows = rows.select(np.sort(rng.choice(len(rows), cfg.per_subset, replace=False)))
            log.info("test subset %s: %d of its rows sampled (testset.per_subset)", name, cfg.per_subset)
        out[name] = to_pairs(rows, form, cfg.text_column, cfg.prompt_column, cfg.target_column)
    return out


def files_key(cfg: DataConfig) -> dict:
    """What identifies ``data=files``' sources on disk, for the cache keys of trained models."""
    named = {name: identity(file) if Path(file).exists() else file for name, file in cfg.train.items()}
    return {"train_files": named, "path_file": identity(cfg.path) if cfg.path and Path(cfg.path).exists() else cfg.path}
