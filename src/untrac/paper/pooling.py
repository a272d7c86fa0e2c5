"""Which finished jobs may be pooled into one table.

Results are only pooled when the jobs' resolved configs (``.hydra/config.yaml``, ``record.CONFIG``) differ in what
the sweeps vary and nothing else: a key may differ only if it is a swept key, lies under one, or is
set by an option of a swept config group, and then only as a function of those swept values.
What a group's options set is read from configs composed by Hydra (``untrac.paper.plan.Composer``):
a job's own overrides, once with each option of the group.
"""

from pathlib import Path

import yaml

from untrac.paper import REPO
from untrac.paper.sweeps import Job, flatten
from untrac.record import HYDRA

MISSING = "<absent>"


def _conf_dir(jobs: list[Job]) -> Path:
    """The conf/ the jobs were composed from (Hydra records it), else this checkout's."""
    for job in jobs:
        meta = job.path / HYDRA if job.path else None
        if meta and meta.is_file():
            for source in yaml.safe_load(meta.read_text())["hydra"]["runtime"]["config_sources"]:
                if source.get("provider") == "main" and source.get("schema") == "file":
                    return Path(source["path"])
    return REPO / "conf"


def group_keys(conf_dir: Path, group: str, jobs: list[Job]) -> set[str]:
    """Config keys that the options of config group ``group`` the jobs use set differently (a swept
    group explains them): each sweep's first job, composed once per option. ``<group>.*`` (every key)
    when a job no longer composes from ``conf_dir``."""
    from untrac.errors import UntracError
    from untrac.paper.plan import Composer

    options = sorted({j.swept.get(group) for j in jobs} - {None})
    firsts = {j.sweep: j for j in jobs}.values()
    keys: set[str] = set()
    try:
        with Composer(conf_dir) as compose:
            for job in firsts:
                others = [o for o in job.overrides if o.partition("=")[0].lstrip("+~") != group]
                composed = [flatten(compose.resolved([*others, f"{group}={o}"])) for o in options]
                for key in set().union(*composed):
                    if len({str(c.get(key, MISSING)) for c in composed}) > 1:
                        keys.add(key)
    except UntracError:  # Hydra's or OmegaConf's error, one line (untrac.paper.plan.one_line_errors)
        return {f"{group}.*"}
    return keys


def _explained(key: str, values: list, jobs: list[Job], swept: set[str], explained: dict) -> bool:
    """Whether the swept keys that may set ``key`` determine its value in every job."""
    explainers = [s for s in sorted(swept) if key == s or key.startswith(s + ".")
                  or key in explained.get(s, ()) or f"{s}.*" in explained.get(s, ())]
    by_setting: dict[tuple, set] = {}
    for job, value in zip(jobs, values):
        by_setting.setdefault(tuple(job.swept.get(s) for s in explainers), set()).add(str(value))
    return bool(explainers) and all(len(v) == 1 for v in by_setting.values())


def inconsistencies(jobs: list[Job], swept: set[str]) -> list[str]:
    """Config keys whose differences between jobs the swept values do not explain."""
    if len(jobs) < 2:
        return []
    conf_dir = _conf_dir(jobs)
    explained = {s: group_keys(conf_dir, s, jobs) for s in swept if (conf_dir / s).is_dir()}
    bad = []
    for key in sorted(set().union(*(j.config for j in jobs))):
        values = [j.config.get(key, MISSING) for j in jobs]
        if len(set(map(str, values))) > 1 and not _explained(key, values, jobs, swept, explained):
            bad.append(key)
    return bad


def partition(jobs: list[Job], keys: list[str]) -> list[list[Job]]:
    """The jobs grouped by their values of ``keys`` (first-seen order)."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(str(job.config.get(k, MISSING)) for k in keys), []).append(job)
    return list(groups.values())
