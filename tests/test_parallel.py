"""Worker-count resolution (untrac/parallel.py); the numbers of the worker path itself are checked
against the sequential ones in tests/test_unlearn_fast.py."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


JOB = '''import os, time

def job(shared, n):
    print(os.getpid(), os.getppid(), flush=True)  # the worker and its parent, the fork server
    time.sleep(300)
'''
POOL = "import sleepy; from untrac.parallel import run_jobs; list(run_jobs(sleepy.job, None, [1, 2], workers=2))"


def _running(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.slow  # 3-5 s
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc (Linux)")
def test_workers_and_their_fork_server_exit_when_the_main_process_is_killed(tmp_path):
    """``kill -9`` of the process running a pool, mid-job: before, both workers and the fork server
    kept running (issue 17: 10 minutes and more, 1.5 GB); now all exit within seconds."""
    (tmp_path / "sleepy.py").write_text(JOB)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    main = subprocess.Popen([sys.executable, "-c", POOL], stdout=subprocess.PIPE, text=True, env=env)
    try:
        seen = [tuple(map(int, main.stdout.readline().split())) for _ in range(2)]
    finally:
        main.kill()
        main.wait()
    pids = {pid for worker in seen for pid in worker}
    assert len(pids) == 3  # two workers, one fork server
    deadline = time.monotonic() + 10
    while any(map(_running, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in pids if _running(pid)]
    for pid in left:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running 10 s after the main process was killed: {left}"
