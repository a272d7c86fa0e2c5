"""Range checks of the typed config, and the collector that reports every failed check at once.

A check that fails outside ``every_problem()`` raises at once (a dataclass built in code); inside it
(``run.py`` converting the composed config) each failure is recorded and the block ends with one
``UntracError`` listing them all, one line each. Also the checks a schema cannot make on the
composed config: an unusable cache folder or a missing data file (``before_training``; a key given twice
in a command-line map is found in the raw command line, ``untrac.run.duplicate_keys``). Nothing here
imports torch or Hydra.
"""

import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator, Optional

from untrac.errors import UntracError

_PROBLEMS: ContextVar[list[str] | None] = ContextVar("untrac_config_problems", default=None)


def check(ok: bool, message: str) -> None:
    if ok:
        return
    problems = _PROBLEMS.get()
    if problems is None:
        raise UntracError(message)
    problems.append(message)


def one_of(value: str, allowed: tuple[str, ...], key: str) -> None:
    check(value in allowed, f"{key}={value!r} is not one of {', '.join(allowed)}")


def positive(value: float | int | None, key: str) -> None:
    check(value is None or value > 0, f"{key} must be > 0, got {value}")


@contextmanager
def every_problem() -> Iterator[None]:
    """Collect the failed checks of everything built inside; raise them together at the end."""
    problems: list[str] = []
    token = _PROBLEMS.set(problems)
    try:
        yield
    finally:
        _PROBLEMS.reset(token)
    if len(problems) == 1:
        raise UntracError(problems[0])
    if problems:
        raise UntracError(f"{len(problems)} problems in the config:\n  " + "\n  ".join(problems))


def files_given(named: dict[str, str], path: Optional[str], group_column: Optional[str], group: str, key: str) -> None:
    """``data=files`` / ``testset=files``: named files, or one file split by a column."""
    check(bool(named) or bool(path), f"{group}=files needs {group}.{key}='{{name: file, ...}}' or "
          f"{group}.path=<file> {group}.group_column=<column naming the {key}>")
    check(bool(path) == bool(group_column), f"{group}.path and {group}.group_column go together: "
          f"one file split into {key} by the column")


def typed(raw):
    """The composed config as its dataclasses (``OmegaConf.to_object``), every failed check of it
    in one ``UntracError``."""
    from omegaconf import OmegaConf

    with every_problem():
        return OmegaConf.to_object(raw)


def writable_folder(path: str | Path, key: str) -> None:
    """Make ``path`` and a file in it now, so an unusable folder (a file, /proc/..., read-only) is one
    line naming ``key`` before anything is trained, not an OSError after."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UntracError(f"{key}={path} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UntracError(f"{key}={path} is not a writable folder: {err.strerror or err}") from None


def files_exist(cfg) -> None:
    """Every file named by ``data=files`` / ``testset=files`` exists (their contents: untrac.data.files)."""
    named = []
    if cfg.data.kind == "files":
        named += [(f"data.train.{name}", file) for name, file in cfg.data.train.items()]
        named += [("data.path", cfg.data.path)] if cfg.data.path else []
    if cfg.testset.name == "files":
        named += [(f"testset.subsets.{name}", file) for name, file in cfg.testset.subsets.items()]
        named += [("testset.path", cfg.testset.path)] if cfg.testset.path else []
    with every_problem():
        for key, file in named:
            check(Path(file).exists(), f"{key}: {file} not found")


def before_training(cfg) -> None:
    """What can go wrong with the file system, checked before the tokenizer, the data or any training."""
    writable_folder(cfg.cache_dir, "cache_dir")
    files_exist(cfg)
