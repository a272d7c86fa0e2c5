"""Progress that suits where the output goes.

On a terminal, tqdm bars. Elsewhere (a log file, a cluster job's stdout, CI) a bar is thousands
of carriage-return updates, so loops report as plain log lines instead: one every
``UNTRAC_PROGRESS_EVERY`` seconds (default 30) while they run, and a closing line for loops
that took at least that long. ``tqdm`` here is a drop-in for the subset of ``tqdm.auto.tqdm``
the project uses (iteration, ``update``, ``set_postfix``, ``close``, ``with``).

The lines per job of a sweep (start, end, elapsed, jobs left) are a Hydra callback: ``untrac.run.JobLines``.
"""

import logging
import os
import sys
import time

from tqdm.auto import tqdm as _bar

log = logging.getLogger("untrac.progress")


def _every() -> float:
    return float(os.environ.get("UNTRAC_PROGRESS_EVERY", "30"))


class LogProgress:
    """tqdm's interface, reported as a log line every ``every`` seconds."""

    def __init__(self, iterable=None, total=None, desc: str = "", every: float | None = None, **_ignored):
        self.iterable, self.desc, self.n = iterable, desc or "progress", 0
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.every = _every() if every is None else every
        self.start = self.last = time.monotonic()
        self.postfix = ""

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _line(self, what: str) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        elapsed = time.monotonic() - self.start
        return f"{self.desc}: {what} {self.n}{of} in {elapsed:.0f} s{self.postfix}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            log.info(self._line("at"))

    def set_postfix(self, **values) -> None:
        self.postfix = " (" + ", ".join(f"{k}={v}" for k, v in values.items()) + ")"

    def close(self) -> None:
        if self.iterable is not None or self.total is not None:
            if time.monotonic() - self.start >= self.every:
                log.info(self._line("done"))
        self.iterable, self.total = None, None


def tqdm(iterable=None, **kwargs):
    """A tqdm bar on a terminal, ``LogProgress`` when stderr is not one."""
    if sys.stderr.isatty():
        return _bar(iterable, **kwargs)
    return LogProgress(iterable, **kwargs)
