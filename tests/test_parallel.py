"""Worker-count resolution (untrac/parallel.py); the numbers of the worker path itself are checked
against the sequential ones in tests/test_unlearn_fast.py."""

import pytest
import torch

from untrac.errors import UntracError
from untrac.parallel import available_cores, resolve_workers

CPU = torch.device("cpu")


def test_auto_is_one_worker_per_core_for_long_runs_and_in_process_for_short_ones():
    assert resolve_workers("auto", jobs=64, device=CPU, steps_per_job=10_000) == len(available_cores())
    assert resolve_workers("auto", jobs=64, device=CPU, steps_per_job=1) == 1
    assert resolve_workers("3", jobs=2, device=CPU) == 2  # never more workers than jobs
    with pytest.raises(UntracError, match="unlearn.workers"):
        resolve_workers("two", jobs=2, device=CPU)


def test_a_launcher_worker_runs_its_jobs_in_process():
    """Inside Hydra's joblib launcher (a loky worker) a pool of our own failed with BrokenProcessPool
    (its children inherit the start method "loky"), so the runs stay in the worker's process."""
    joblib = pytest.importorskip("joblib")
    inside = joblib.Parallel(n_jobs=2)(joblib.delayed(resolve_workers)(spec, 8, CPU, 10_000) for spec in ("2", "auto"))
    assert inside == [1, 1]
    assert resolve_workers("2", 8, CPU, 10_000) == 2  # here, in the test process: a pool is allowed
