"""A Hydra multirun directory read back: the jobs the sweep defines, and what became of each.

A job is ok (its three result files readable), failed (a ``FAILED`` file, or unreadable results),
incomplete (a directory without results: killed or still running) or missing (no directory).
The jobs a sweep defines are expanded from its ``multirun.yaml`` exactly as Hydra's basic sweeper
does (``untrac.run.sweep_jobs``: Hydra's own expansion), so a job that never started is still listed, under its number.
"""

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from untrac.errors import UntracError
from untrac.paper.plan import JOB_NAME
from untrac.record import CONFIG, FAILED, HYDRA, MULTIRUN, OVERRIDES, RESULTS, read_frame


@dataclass
class Job:
    sweep: Path
    num: int
    overrides: list[str]
    status: str  # ok | failed | incomplete | missing
    reason: str = ""
    path: Path | None = None
    config: dict = field(default_factory=dict)  # flattened .hydra/config.yaml (record.CONFIG)

    @property
    def swept(self) -> dict[str, str]:
        return dict(_split(o) for o in self.overrides)

    def label(self) -> str:
        return f"{self.sweep}/{self.num} ({' '.join(self.overrides)})"


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def flatten(node, prefix: str = "") -> dict:
    """A nested config as ``{"a.b.c": value}``; lists as their repr, empty mappings as "{}"."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: "{}"}
    return {prefix[:-1]: repr(node) if isinstance(node, list) else node}


def _yaml(path: Path) -> dict:
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def find_sweeps(paths: list[Path]) -> list[Path]:
    """Multirun directories at or up to four levels below ``paths``; the model-training multiruns
    (``train-models``, and ``prefill`` of older sweeps) left out."""
    sweeps = []
    for path in paths:
        found = [path] if (path / MULTIRUN).is_file() else sorted(
            p.parent for p in path.rglob(MULTIRUN) if len(p.relative_to(path).parts) <= 4)
        sweeps += [s for s in found if _job_name(s) not in (JOB_NAME, "prefill")]
    return sweeps


def _job_name(sweep: Path) -> str:
    return _yaml(sweep / MULTIRUN).get("hydra", {}).get("job", {}).get("name", "")


def expected_jobs(sweep: Path) -> tuple[list[list[str]] | None, set[str]]:
    """The jobs the sweep defines (None under another sweeper than the basic one) and the keys it sweeps."""
    from untrac.run import sweep_jobs, swept_keys

    hydra = _yaml(sweep / MULTIRUN).get("hydra", {})
    sweeper = hydra.get("sweeper", {})
    params = sweeper.get("params") or {}
    task = list(hydra.get("overrides", {}).get("task", []))
    swept = swept_keys(params, task)
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None, swept
    return sweep_jobs(params, task), swept


def _unreadable(path: Path) -> str:
    """What is wrong with the job's result files ("" when each reads as the contract says)."""
    try:
        for table in RESULTS:
            read_frame(path, table)
    except UntracError as err:
        return str(err)
    return ""


def _job_dirs(sweep: Path) -> dict[int, tuple[Path, list[str]]]:
    """Job number → (directory, overrides) of every job directory Hydra left under ``sweep``."""
    found = {}
    for meta in sweep.rglob(HYDRA):
        job_dir = meta.parent.parent
        num = _yaml(meta).get("hydra", {}).get("job", {}).get("num")
        if num is not None:
            found[int(num)] = (job_dir, yaml.safe_load((job_dir / OVERRIDES).read_text()) or [])
    return found


def _status(job: Job) -> Job:
    path = job.path
    job.config = flatten(_yaml(path / CONFIG))
    if (path / FAILED).is_file():
        job.status, job.reason = "failed", (path / FAILED).read_text().strip().splitlines()[0]
    elif not all((path / t.file).is_file() for t in RESULTS):
        job.status, job.reason = "incomplete", "no results and no FAILED file (killed, or still running)"
    else:
        problem = _unreadable(path)
        if problem:
            job.status, job.reason = "failed", problem
    return job


def read_jobs(sweep: Path) -> tuple[list[Job], set[str]]:
    """Every job of ``sweep`` (defined or found) with its status, and the keys the sweep varies."""
    expected, swept = expected_jobs(sweep)
    found = _job_dirs(sweep)
    nums = sorted(set(range(len(expected))) | set(found)) if expected is not None else sorted(found)
    jobs = []
    for num in nums:
        if num not in found:
            jobs.append(Job(sweep, num, expected[num], "missing", "no job directory"))
        else:
            path, overrides = found[num]
            jobs.append(_status(Job(sweep, num, overrides, "ok", path=path)))
    return jobs, swept
