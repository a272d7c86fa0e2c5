"""Independent jobs (one unlearning run per set) spread over worker processes that own their cores.

The K unlearning runs of UnTrac / UnTrac-Inv share nothing but θ0 and the evaluation data, and a
tiny model cannot use more than one core per run (one thread measured as fast as two). So the
parallelism is across runs: ``workers`` processes, each pinned to its own slice of the cores
with ``torch`` threads = that slice's size, never more threads than cores (the HF Trainer at 2
threads with a core taken by another process fell to 1 step/s: oversubscription).

Every job runs the same code with the same thread count as in the parent, so results are the
sequential ones bit for bit (tests/test_parallel.py). Workers start from a fork server, a fresh
process that never ran an OpenMP region (forking one that did can deadlock).

Workers exit as soon as the process that started them dies, even by ``kill -9`` (``_exit_with``):
nothing else would stop them. The pool's queues give them no end-of-file (each worker holds a
write end of its own input queue), and the fork server exits only when every holder of its
"alive" pipe is gone, workers included (measured before this: after a ``kill -9`` of the main
process, two workers in a job and their fork server were all still running 20 s later).
"""

import logging
import os
import select
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator

import torch
import torch.multiprocessing as mp

from untrac.errors import UntracError

log = logging.getLogger(__name__)

_SHARED: Any = None  # what every job of a worker needs (θ0, evaluation data), received once


def available_cores() -> list[int]:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


# Starting a worker (fork server, imports, receiving θ0) took 4–9 s here; ``auto`` keeps short
# runs (tests, smoke runs) in-process, where that would cost more than it saves.
AUTO_MIN_STEPS = 128


def in_launcher_worker() -> bool:
    """Whether this process is a worker of a joblib (loky) pool, e.g. Hydra's joblib launcher.

    Such a worker cannot start a pool of its own (the children inherit the start method "loky",
    which plain multiprocessing does not know: BrokenProcessPool), and the launcher already
    spreads the jobs over the cores, so its runs stay in-process.
    """
    return mp.get_start_method(allow_none=True) == "loky"


def resolve_workers(spec: str | int, jobs: int, device: torch.device, steps_per_job: int = AUTO_MIN_STEPS) -> int:
    """``auto`` = one worker per available core for runs of ≥ ``AUTO_MIN_STEPS`` steps, else 1;
    never more workers than jobs; 1 on a GPU (one device) and inside a launcher's worker process."""
    if device.type != "cpu":
        return 1
    if in_launcher_worker():
        if str(spec) not in ("auto", "1"):
            log.info("unlearn.workers=%s: running in-process (this job is a launcher's worker process)", spec)
        return 1
    if str(spec) == "auto":
        wanted = len(available_cores()) if steps_per_job >= AUTO_MIN_STEPS else 1
    else:
        try:
            wanted = int(spec)
        except ValueError:
            raise UntracError(f"unlearn.workers={spec!r} is neither 'auto' nor a whole number") from None
        if wanted < 1:
            raise UntracError(f"unlearn.workers must be >= 1 or 'auto', got {spec}")
    return max(1, min(wanted, jobs))


def _exit_with(parent: int) -> None:
    """End this process the moment ``parent`` ends, from a daemon thread that waits on a pidfd.

    Not ``prctl(PR_SET_PDEATHSIG)``: a worker's parent is the fork server, not the process that runs
    the pool, and the fork server itself lives as long as its workers do. A pidfd (Linux ≥ 5.3)
    becomes readable when the process exits, zombie or not, and cannot name a reused pid; elsewhere
    the thread polls the pid once a second.
    """
    try:
        handle = os.pidfd_open(parent)
    except ProcessLookupError:  # already gone
        os._exit(1)
    except (AttributeError, OSError):
        handle = None

    def watch() -> None:
        if handle is not None:
            select.select([handle], [], [])
        else:
            while True:
                try:
                    os.kill(parent, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
                threading.Event().wait(1.0)
        os._exit(1)  # no cleanup to wait for: a job's result only counts once the parent stored it

    threading.Thread(target=watch, name="untrac-exit-with-parent", daemon=True).start()


def _init(parent: int, core_slices, shared) -> None:
    global _SHARED
    _exit_with(parent)
    cores = core_slices.get()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))
    _SHARED = shared


def _call(fn: Callable, job) -> Any:
    return fn(_SHARED, job)


def run_jobs(fn: Callable[[Any, Any], Any], shared: Any, jobs: list, workers: int) -> Iterator[Any]:
    """``fn(shared, job)`` for every job, yielded as each finishes (so it can be stored at once).

    ``workers == 1`` runs them here, in order: the reference path.
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield fn(shared, job)
        return
    cores = available_cores()
    per_worker = max(1, len(cores) // workers)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([fn.__module__])  # imported once by the server, inherited by each worker
    core_slices = ctx.SimpleQueue()
    for i in range(workers):
        # More workers than cores share cores round-robin, but each keeps one thread.
        core_slices.put(set(cores[i * per_worker:(i + 1) * per_worker] or [cores[i % len(cores)]]))
    log.info("%d jobs on %d worker processes, %d thread(s) each", len(jobs), workers, per_worker)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init,
                             initargs=(os.getpid(), core_slices, shared)) as pool:
        pending = {pool.submit(_call, fn, job) for job in jobs}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()
