"""Reading a user's data file into columns, each row with the number a user finds it by.

The number of a row (``Rows.numbers``, 1-based, carried into ``examples.csv``'s ``example``):
- ``.jsonl`` / ``.json`` lines: the line of the file (blank lines are skipped, not counted out);
- ``.csv``: the line of the file where the record starts; the header is line 1, so the first data
  row is line 2 (what an editor and a spreadsheet show);
- ``.txt``: the line where the unit starts (``txt_unit``: each non-blank line, or each paragraph of
  consecutive non-blank lines);
- ``.parquet`` and ``datasets.save_to_disk`` folders: the row's index + 1;
- a ``.json`` file holding one JSON array: the item's position + 1.
JSON, CSV and text are read with the standard library line by line, which is what gives exact line
numbers, refuses a short or long CSV row, tells a JSON ``null`` from a missing key, and keeps every
CSV cell as text ("007" stays "007"). A byte that is not UTF-8 is refused naming its line.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from untrac.config import TXT_UNITS
from untrac.errors import UntracError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
# A long document in one cell is legitimate; the csv module's default limit is 131,072 characters.
csv.field_size_limit(2**31 - 1)


@dataclass
class Rows:
    """Columns of one file (``None``: a missing value) and each row's number (module docstring)."""

    columns: dict[str, list[Any]]
    numbers: list[int]
    unit: str  # how a message names a row: "line", "row" or "item"

    def at(self, index: int) -> str:
        return f"{self.unit} {self.numbers[index]}"


def read(path: str | Path, where: str, txt_unit: str = "line", text_column: str = "text") -> Rows:
    """Every row of one file or ``save_to_disk`` folder; ``where`` (the setting and the file) prefixes
    every error.
    A ``.txt`` file's one column is named ``text_column``, as the other files' texts are."""
    path = Path(path)
    if path.is_dir():
        return _saved(path, where)
    if not path.is_file():
        raise UntracError(f"{where}: {path} not found")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UntracError(f"{where}: unknown format (use {', '.join(SUFFIXES)} or a "
                          "datasets.save_to_disk folder)")
    if suffix == ".parquet":
        rows = _parquet(path, where)
    else:
        lines = list(_lines(path, where))
        readers = {".csv": _csv, ".txt": lambda ls, w: _txt(ls, w, txt_unit, text_column),
                   ".json": lambda ls, w: _json(ls, w, array=True), ".jsonl": _json}
        rows = readers[suffix](lines, where)
    if not rows.numbers:
        raise UntracError(f"{where}: no rows")
    return rows


def _lines(path: Path, where: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line with its ending), each decoded as UTF-8 on its own."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark (Excel's "CSV UTF-8") is not text
        data = data[3:]
    for number, raw in enumerate(data.splitlines(keepends=True), 1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UntracError(f"{where}: line {number} is not UTF-8 (byte 0x{raw[err.start]:02x} at byte "
                              f"{err.start + 1} of the line); save the file as UTF-8") from None


def _json(lines: list[tuple[int, str]], where: str, array: bool = False) -> Rows:
    first = next((text.lstrip() for _, text in lines if text.strip()), "")
    if array and first.startswith("["):  # a .json file may hold one JSON array instead of JSON lines
        try:
            items = json.loads("".join(text for _, text in lines))
        except json.JSONDecodeError as err:
            raise UntracError(f"{where}: line {err.lineno} is not valid JSON ({err.msg})") from None
        return _objects([(n, item) for n, item in enumerate(items, 1)], "item", where)
    parsed = []
    for number, text in lines:
        if not text.strip():
            continue
        try:
            parsed.append((number, json.loads(text)))
        except json.JSONDecodeError as err:
            raise UntracError(f"{where}: line {number} is not valid JSON ({err.msg} at column {err.colno})") from None
    return _objects(parsed, "line", where)


def _objects(items: list[tuple[int, Any]], unit: str, where: str) -> Rows:
    columns: dict[str, list[Any]] = {}
    numbers: list[int] = []
    for number, item in items:
        if not isinstance(item, dict):
            raise UntracError(f"{where}: {unit} {number} is a JSON {type(item).__name__}, not an object "
                              '({"column": value, ...})')
        for key in item.keys() - columns.keys():  # a key first seen now: missing in the rows before
            columns[key] = [None] * len(numbers)
        for key, values in columns.items():
            values.append(item.get(key))
        numbers.append(number)
    return Rows(columns, numbers, unit)


def _csv(lines: list[tuple[int, str]], where: str) -> Rows:
    reader = csv.reader((text for _, text in lines), strict=True)
    header, header_line, columns, numbers = None, 0, {}, []
    try:
        while True:
            start = reader.line_num + 1
            fields = next(reader, None)
            if fields is None:
                break
            if not fields:  # a blank line separates nothing in CSV: skipped
                continue
            if header is None:
                header, header_line = fields, start
                if duplicate := sorted({name for name in header if header.count(name) > 1}):
                    raise UntracError(f"{where}: line {start}: the header names "
                                      f"{', '.join(map(repr, duplicate))} twice")
                columns = {name: [] for name in header}
                continue
            if len(fields) != len(header):
                raise UntracError(f"{where}: line {start} has {_fields(len(fields))} but the header (line "
                                  f"{header_line}) has {_fields(len(header))}: a missing or extra comma, "
                                  "or an unquoted comma in a cell")
            for name, value in zip(header, fields):
                columns[name].append(value)
            numbers.append(start)
    except csv.Error as err:
        raise UntracError(f"{where}: line {reader.line_num} is not valid CSV ({err})") from None
    return Rows(columns, numbers, "line")


def _fields(n: int) -> str:
    return f"{n} field" + ("" if n == 1 else "s")


def _txt(lines: list[tuple[int, str]], where: str, unit: str, column: str) -> Rows:
    if unit not in TXT_UNITS:
        raise UntracError(f"{where}: txt_unit={unit!r} is not one of {', '.join(TXT_UNITS)}")
    texts, numbers = [], []
    previous_blank = True
    for number, text in lines:
        text = text.rstrip("\r\n")
        if not text.strip():
            previous_blank = True
            continue
        if unit == "line" or previous_blank:
            texts.append(text)
            numbers.append(number)
        else:  # the paragraph goes on
            texts[-1] += "\n" + text
        previous_blank = False
    return Rows({column: texts}, numbers, "line")


def _parquet(path: Path, where: str) -> Rows:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise UntracError(f"{where}: cannot be read as Parquet ({_one_line(err)})") from None
    return Rows({name: table.column(name).to_pylist() for name in table.column_names},
                list(range(1, table.num_rows + 1)), "row")


def _saved(path: Path, where: str) -> Rows:
    import datasets

    try:
        saved = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - not a save_to_disk folder, or a damaged one
        if _saved_without_data(path):  # datasets saves an empty dataset but cannot load it back
            raise UntracError(f"{where}: no rows") from None
        raise UntracError(f"{where}: a folder but not one written by datasets.save_to_disk "
                          f"({type(err).__name__})") from None
    if isinstance(saved, datasets.DatasetDict):
        splits = list(saved)
        if "train" not in saved and len(splits) != 1:
            raise UntracError(f"{where}: the folder holds splits {', '.join(splits)}; save one split or a "
                              "'train' split")
        saved = saved["train" if "train" in saved else splits[0]]
    if len(saved) == 0:
        raise UntracError(f"{where}: no rows")
    return Rows({name: saved.data.column(name).to_pylist() for name in saved.column_names},
                list(range(1, len(saved) + 1)), "row")


def _saved_without_data(path: Path) -> bool:
    try:
        return json.loads((path / "state.json").read_text()).get("_data_files") == []
    except (OSError, ValueError, AttributeError):
        return False


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:200]
