"""The jobs of the paper targets, as ``python -m untrac.paper TARGET`` runs them (a helper, no test).

The one test module that imports the sweep expansion (``untrac.run.sweep_jobs``: Hydra's basic
sweeper over an experiment's ``hydra.sweeper.params``, as the planner and ``untrac.run -m`` use it),
so that moving it is a change of one import here.
"""

from functools import lru_cache

from conftest import compose_config  # tests/ is on sys.path: pytest's rootdir conftest
from untrac.run import sweep_jobs

SCALES = ("cpu", "paper")
# The experiment parts of the paper's results (conf/experiment/<part>.yaml) and their data family
# (conf/scale/<family>/): §5.1 synthetic data, §5.2 the eight pretraining corpora.
FAMILY = {"table2": "synthetic", "fig2": "synthetic", "fig2_inv": "synthetic", "table3": "pile8", "table5": "pile8",
          "table4": "pile8", "table4_lr": "pile8", "fig3": "pile8", "fig3_b256": "pile8", "fig4": "pile8"}


@lru_cache(maxsize=None)
def head(part: str, scale: str):
    """The part's config with its hydra node (the sweep), as ``untrac.run -m`` composes it before expanding
    (composed once per session: read it, do not change it)."""
    return compose_config(f"experiment={part}", f"scale={scale}", hydra=True)


def swept(cfg) -> dict[str, list[str]]:
    """Each swept key of a ``head`` config and its values, as the experiment and scale files write them."""
    return {key: str(values).split(",") for key, values in cfg.hydra.sweeper.params.items()}


def jobs(part: str, scale: str) -> list[dict[str, str]]:
    """Every job of the part's sweep (its overrides, key → value), in Hydra's order."""
    expanded = sweep_jobs(head(part, scale).hydra.sweeper.params, [f"experiment={part}", f"scale={scale}"])
    assert expanded is not None, f"experiment={part}: its sweep is no list of jobs"
    return [dict(override.split("=", 1) for override in job) for job in expanded]


def each_value_once(part: str, scale: str) -> list[dict[str, str]]:
    """The first job, and for every other swept value one job that changes only it (what a fast test composes)."""
    params = swept(head(part, scale))
    first = {"experiment": part, "scale": scale, **{key: values[0] for key, values in params.items()}}
    return [first] + [{**first, key: value} for key, values in params.items() for value in values[1:]]


def typed_job(job: dict[str, str]):
    """The job's typed, validated Config (``untrac.checks.typed``), composed as ``untrac.run`` composes it
    (once per session: several test modules read the same jobs)."""
    return _typed(tuple(job.items()))


@lru_cache(maxsize=None)
def _typed(job: tuple[tuple[str, str], ...]):
    from untrac.checks import typed

    return typed(compose_config(*(f"{key}={value}" for key, value in job)))
