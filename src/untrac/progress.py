"""Progress that suits where the output goes.

On a terminal, tqdm bars. Elsewhere (a log file, a cluster job's stdout, CI) a bar is thousands
of carriage-return updates, so loops report as plain log lines instead: one every
``UNTRAC_PROGRESS_EVERY`` seconds (default 30) while they run, and a closing line for loops
that took at least that long. ``tqdm`` here is a drop-in for the subset of ``tqdm.auto.tqdm``
the project uses (iteration, ``update``, ``set_postfix``, ``close``, ``with``).

``JobLines`` is a Hydra callback (``conf/config.yaml``) that prints one line per job of a sweep
as it starts and ends, with its elapsed time and how many jobs are left.
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


def sweep_size(hydra_cfg) -> int | None:
    """Jobs in a basic-sweeper multirun, expanded by Hydra itself (``untrac.sweep.sweep_jobs``:
    the experiment's ``hydra.sweeper.params``, then the command line); None if not countable."""
    from untrac.sweep import sweep_jobs

    params = {k: str(v) for k, v in (hydra_cfg.sweeper.get("params") or {}).items()}
    jobs = sweep_jobs(params, list(hydra_cfg.overrides.task))
    return None if jobs is None else len(jobs)


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency; this keeps the module importable alone
    Callback = object


class JobLines(Callback):
    """One line per job on stderr: ``[job 3/14] start: <overrides>`` and ``[job 3/14] done in 41 s, 11 left``.

    The sweep's size is counted when the multirun starts (the basic and joblib launchers run the
    jobs from the same process; a cluster launcher's workers print ``?`` for it).
    """

    def __init__(self) -> None:
        self.total: int | None = None
        self.started: dict[int, float] = {}

    def on_multirun_start(self, config, **kwargs) -> None:
        self.total = sweep_size(config.hydra)

    def _label(self, config) -> tuple[int, str]:
        num = int(config.hydra.job.get("num") or 0)
        return num, f"[job {num + 1}/{self.total or '?'}]"

    def on_job_start(self, config, **kwargs) -> None:
        if str(config.hydra.mode) != "RunMode.MULTIRUN":
            return  # a single run needs no job lines
        num, label = self._label(config)
        self.started[num] = time.monotonic()
        print(f"{label} start: {' '.join(config.hydra.overrides.task) or '(defaults)'}", file=sys.stderr, flush=True)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        from untrac.record import FAILED

        num, label = self._label(config)
        elapsed = time.monotonic() - self.started.pop(num, time.monotonic())
        failed = (config.hydra.runtime.output_dir and os.path.exists(os.path.join(config.hydra.runtime.output_dir, FAILED)))
        left = f", {self.total - num - 1} left" if self.total else ""
        print(f"{label} {'FAILED' if failed else 'done'} in {elapsed:.0f} s{left}", file=sys.stderr, flush=True)
