"""Range checks of the typed config, and the collector that reports every failed check at once.

A check that fails outside ``every_problem()`` raises at once (a dataclass built in code); inside it
(``run.py`` converting the composed config) each failure is recorded and the block ends with one
``UntracError`` listing them all, one line each. Nothing here imports torch.
"""

from contextlib import contextmanager
from contextvars import ContextVar
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
