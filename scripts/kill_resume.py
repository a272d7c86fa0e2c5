"""kill -9 at any stage, then the same command: resumes, identical results, nothing left running.

    python scripts/kill_resume.py [--delays 4,9,15,22,30] [-- overrides ...]

1. runs ``python -m untrac.run`` once uninterrupted into a fresh cache (the reference);
2. with a second fresh cache, starts the same command and sends SIGKILL to it after each delay in
   turn (each start resumes from what the last one left), checking after every kill that no
   process of the run (its workers, their fork server) is left alive;
3. runs the command to the end and compares influence.csv, ground_truth.csv and correlations.csv
   with the reference, value for value.

Prints one line per step and exits 1 on any difference or leftover process.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT = ["method=untrac", "unlearn.workers=2"]  # the default job, its scoring in two worker processes


def command(cache: Path, run_dir: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "untrac.run", f"cache_dir={cache}", f"hydra.run.dir={run_dir}", *overrides]


def leftovers(marker: str) -> list[int]:
    """Pids of live processes whose command line or environment names ``marker`` (the run's cache)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in text:
            found.append(int(proc.name))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delays", default="4,9,15,22,30", help="seconds after each start to send SIGKILL")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    overrides = argv[cut + 1:] or DEFAULT
    root = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    start = time.perf_counter()
    subprocess.run(command(root / "ref_cache", root / "reference", overrides), cwd=REPO, check=True,
                   capture_output=True)
    print(f"reference run: {time.perf_counter() - start:.0f} s", flush=True)
    cache, failed = root / "cache", False
    for i, delay in enumerate(float(d) for d in args.delays.split(",")):
        env = {**os.environ, "UNTRAC_KILL_MARKER": str(cache)}  # lets leftovers() find every child
        proc = subprocess.Popen(command(cache, root / f"killed{i}", overrides), cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        if proc.poll() is not None:
            print(f"start {i}: finished before {delay:g} s, nothing to kill", flush=True)
            continue
        stage = [line for line in open(root / f"killed{i}" / "run.log", errors="replace")][-1:] \
            if (root / f"killed{i}" / "run.log").is_file() else []
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(2)
        left = leftovers(str(cache))
        failed |= bool(left)
        print(f"start {i}: killed after {delay:g} s ({' '.join(stage).strip()[-90:]}); "
              f"processes left: {left or 'none'}", flush=True)
    subprocess.run(command(cache, root / "resumed", overrides), cwd=REPO, check=True, capture_output=True)
    for name in ("influence.csv", "ground_truth.csv", "correlations.csv"):
        a, b = (pd.read_csv(root / d / name) for d in ("reference", "resumed"))
        same = a.equals(b)
        failed |= not same
        print(f"{name}: {'identical' if same else 'DIFFERENT'} ({len(a)} rows)", flush=True)
    print(f"outputs in {root}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
