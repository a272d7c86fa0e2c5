"""The jobs of a Hydra multirun, expanded by Hydra's basic sweeper itself: no sweep syntax is parsed here.

One definition for everyone who counts or lists jobs: the planner (``untrac.paper.plan``), the
aggregator's reading of a finished sweep (``untrac.paper.sweeps``) and the job lines
(``untrac.progress.JobLines``). Hydra-aware by nature; imports nothing of the package.
"""


def sweep_jobs(params: dict | None, overrides: list[str]) -> list[list[str]] | None:
    """The job list of Hydra's basic sweeper (its own ``split_arguments``): sweeper ``params`` first,
    then the command line; None for a sweep it cannot run (``interval(…)``)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    arguments = [f"{k}={v}" for k, v in (params or {}).items()] + list(overrides)
    try:
        return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)[0]
    except HydraException:
        return None
