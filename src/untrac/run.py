"""``python -m untrac.run [overrides]``: the entry point, and with ``untrac.paper.plan`` the only module
that imports Hydra.

Compose the config → typed ``Config`` (range checks) → ``run_experiment`` → result files in the
run directory → print the summary. Every bad input ends as one line on stderr (``untrac: error: ...``)
and exit code 1; finished models stay in the cache, so rerunning after a fix resumes.
Until the config is checked nothing heavy is imported (no torch, transformers, datasets, pandas), so
a config error shows in the time Python and Hydra take to start.

Also what needs Hydra around a run: the schema's registration in Hydra's ConfigStore
(``register_configs``), the raw command line's duplicate map keys (``duplicate_keys``), the jobs of a
multirun as Hydra's basic sweeper expands them (``sweep_jobs``: the planner, the aggregator and the
job lines count with it) and the ``JobLines`` callback (``conf/config.yaml``).
"""

import logging
import os
import re
import sys
import time
import traceback
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger("untrac")
FAILURES: list[str] = []
# Settings whose value is a {name: value} map given on the command line: Hydra keeps the last of two
# equal keys without a word, which would drop a dataset.
NAMED_MAPS = ("data.train", "testset.subsets", "data.custom_sizes")


def inside_null_map(err: BaseException, overrides: list[str]) -> str | None:
    """OmegaConf raises a bare AssertionError ("Unexpected type for root: NoneType") when an override sets
    a key inside a map that is null in the composed config: ``model.pretrain.lr=…`` with a model preset
    that has no pretraining recipe. The one line for it, or None for any other error."""
    if not (isinstance(err, AssertionError) and "Unexpected type for root: NoneType" in str(err)):
        return None
    if any(o.lstrip("+~").startswith("model.pretrain.") for o in overrides):
        return ("model.pretrain.* sets the pretraining recipe of a model preset that has none "
                "(only model=t5_standin pretrains); give model=t5_standin or drop the override")
    return "an override sets a key inside a config map that is null in this config; set the map's preset first"


def _one_line(err: BaseException) -> str:
    """Hydra/OmegaConf messages span lines (message, full_key, object_type): fold them into one."""
    from untrac.errors import UntracError

    if isinstance(err, UntracError):  # several problems of one config: one line each
        first, *more = [" ".join(line.split()) for line in str(err).splitlines()]
        return "\n  ".join([first, *more])
    cause = err.__cause__
    parts = [str(err)] + ([str(cause)] if cause and str(cause) not in str(err) else [])
    text = " ".join(" ".join(parts).split())
    # Hydra's hint for an unknown key ("To append to your config use +k=v") would lead past the schema.
    text = re.sub(r" To append to your config use \S+", "", text)
    # Hydra appends where it searched; the option list before it is what the user needs.
    return text.split(" Config search path:")[0].strip()


def register_configs(schema: type | None = None) -> None:
    """Register the schema (``untrac.config.Config``, or a subclass with a tool's own keys such as
    train-models' plan keys) so ``conf/config.yaml`` can extend it and Hydra type-checks every key."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import MISSING, OmegaConf

    from untrac.config import Config
    from untrac.method_config import SCHEMAS
    from untrac.optim_config import OPTIMIZERS

    node = OmegaConf.structured(schema or Config)
    # Hydra locks the whole config (struct mode), which would refuse every key of a dict given on
    # the command line (data.train='{news: a.jsonl}'); unlock just these {name: value} maps.
    for path in NAMED_MAPS:
        OmegaConf.set_struct(OmegaConf.select(node, path), False)
    node.optim = MISSING  # filled by the optim group, so no key of the default optimizer lingers
    store = ConfigStore.instance()
    store.store(name="base_config", node=node)
    # One schema node per method; conf/method/<name>.yaml extends it (defaults: /method_schema/<name>@method).
    for name, method_schema in SCHEMAS.items():
        store.store(group="method_schema", name=name, node=method_schema(name=name))
    for name, optim_schema in OPTIMIZERS.items():  # conf/optim/<name>.yaml extends base_<name>
        store.store(group="optim", name=f"base_{name}", node=optim_schema)
    # An experiment's model depends on the scale (`override /model: ${at_scale:opt_tiny,opt125m}`): a config
    # reached through a defaults-list interpolation may not override a group, an override's value may.
    OmegaConf.register_new_resolver("at_scale", _at_scale, replace=True)


def _at_scale(cpu: str, paper: str, *, _root_) -> str:
    """``${at_scale:CPU,PAPER}``: the value for the composed ``scale`` (a choice of the scale group)."""
    return {"cpu": cpu, "paper": paper}[_root_.scale]


def duplicate_keys(overrides: list[str]) -> None:
    """Refuse ``data.train='{a: x, a: y}'`` (any of ``NAMED_MAPS``) in the raw command-line overrides;
    an override Hydra cannot parse is left for Hydra to report."""
    from hydra.core.override_parser.overrides_parser import (CommonTokenStream, InputStream, OverrideLexer,
                                                             OverrideParser, create_functions)
    from hydra.core.override_parser.overrides_visitor import HydraErrorListener, HydraOverrideVisitor
    from hydra.errors import HydraException

    from untrac.errors import UntracError

    class KeysInOrder(HydraOverrideVisitor):  # Hydra's visitor, but a dict's keys are checked before dict()
        def visitDictContainer(self, ctx):
            pairs = [self.visitDictKeyValuePair(ctx.getChild(i)) for i in range(1, ctx.getChildCount() - 1, 2)]
            keys = [key for key, _ in pairs]
            twice = next((key for key in keys if keys.count(key) > 1), None)
            if twice is not None:
                raise UntracError(f"{self.setting} gives the key {twice!r} twice: each needs its own name "
                                  "(Hydra would silently keep only the last)")
            return dict(pairs)

    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or key.lstrip("+~") not in NAMED_MAPS:
            continue
        lexer = OverrideLexer(InputStream(value))
        lexer.mode(OverrideLexer.VALUE_MODE)
        parser = OverrideParser(CommonTokenStream(lexer))
        for part in (lexer, parser):
            part.removeErrorListeners()
            part.addErrorListener(HydraErrorListener())
        visitor = KeysInOrder(create_functions())
        visitor.setting = key.lstrip("+~")
        try:
            visitor.visit(parser.value())
        except HydraException:
            continue  # not parseable here: Hydra reports it while composing


def _arguments(params: dict | None, overrides: list[str]) -> list[str]:
    return [f"{k}={v}" for k, v in (params or {}).items()] + list(overrides)


def sweep_jobs(params: dict | None, overrides: list[str]) -> list[list[str]] | None:
    """The job list of Hydra's basic sweeper (its own ``split_arguments``): sweeper ``params`` first,
    then the command line; None for a sweep it cannot run (``interval(…)``). No sweep syntax is
    parsed here: the planner, the aggregator and the job lines all count with Hydra's own expansion."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(_arguments(params, overrides))
        return BasicSweeper.split_arguments(parsed, None)[0]
    except HydraException:
        return None


def swept_keys(params: dict | None, overrides: list[str]) -> set[str]:
    """The keys a sweep varies: every key of the sweeper's ``params`` and each sweep override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # An unparsable override raises Hydra's error: python -m untrac.paper makes it one line
    # (untrac.paper.plan.one_line_errors), as for every other Hydra error.
    parsed = OverridesParser.create().parse_overrides(_arguments(params, overrides))
    swept = {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}
    return swept | {str(k).lstrip("+~") for k in params or {}}


def sweep_size(hydra_cfg) -> int | None:
    """Jobs in a basic-sweeper multirun (``sweep_jobs``: the experiment's ``hydra.sweeper.params``,
    then the command line); None if not countable."""
    params = {k: str(v) for k, v in (hydra_cfg.sweeper.get("params") or {}).items()}
    jobs = sweep_jobs(params, list(hydra_cfg.overrides.task))
    return None if jobs is None else len(jobs)


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


def _task(raw) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from untrac.checks import writable_folder
    from untrac.config import typed_config
    from untrac.errors import UntracError
    from untrac.record import FAILED, TRACEBACK, write_text

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        cfg = typed_config(raw)  # as RunRecord.load reads it back from .hydra/config.yaml
        writable_folder(out_dir, "hydra.sweep.dir" if multirun else "hydra.run.dir")
        _run(cfg, out_dir)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line + a file in the run dir
        user_error = isinstance(err, UntracError) or isinstance(err.__cause__, UntracError)
        message = _one_line(err.__cause__ if isinstance(err.__cause__, UntracError) else err)
        if not user_error:
            message = f"{type(err).__name__}: {message} (traceback in {out_dir / TRACEBACK})"
            _written(write_text, out_dir / TRACEBACK, traceback.format_exc())
        if not _written(write_text, out_dir / FAILED, message + "\n"):
            message += f" ({FAILED} could not be written either)"
        if not multirun:
            raise SystemExit(f"untrac: error: {message}")
        log.error("job failed: %s", message)
        FAILURES.append(f"{out_dir}: {message}")


def _written(write_text, path: Path, text: str) -> bool:
    """FAILED / traceback.txt where the disk allows: the error line is printed either way."""
    from untrac.errors import UntracError

    try:
        write_text(path, text)
    except UntracError:
        return False
    return True


def _run(cfg, out_dir: Path) -> None:
    from untrac.checks import before_training
    from untrac.config import theta0_text

    before_training(cfg)  # the file system, before the heavy imports and any training
    from untrac.pipeline import run_experiment
    from untrac.report import RunReport, write_run

    log.info("output directory: %s", out_dir)
    results = run_experiment(cfg)
    title = f"{cfg.method.name} on {cfg.data.name} / {cfg.testset.name} ({cfg.model.name}, {cfg.runs} run(s))"
    report = RunReport(results.influence, results.truth, title, seconds=dict(results.seconds),
                       counters=results.counters, retrained_truth=cfg.data.runs_vary == "seed",
                       truth_seeds=results.truth_seeds, examples=results.examples if cfg.rank.top_k else None,
                       subsets=results.subsets, theta0=theta0_text(cfg))
    text = write_run(out_dir, report)
    print(text)
    log.info("results written to %s", out_dir)


def main() -> None:
    # Let composition errors reach us instead of Hydra's multi-line report, to print one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from untrac.errors import UntracError

    try:
        duplicate_keys(sys.argv[1:])  # Hydra merges a map's equal keys silently: read them as typed
    except UntracError as err:
        sys.exit(f"untrac: error: {err}")
    register_configs()
    conf_dir = os.environ.get("UNTRAC_CONF", str(Path(__file__).resolve().parents[2] / "conf"))
    entry = hydra.main(version_base="1.3", config_path=conf_dir, config_name="config")(_task)
    try:
        entry()
    except (HydraException, OmegaConfBaseException, UntracError) as err:
        sys.exit(f"untrac: error: {_one_line(err)}")
    except AssertionError as err:
        line = inside_null_map(err, sys.argv[1:])
        if line is None:
            raise
        sys.exit(f"untrac: error: {line}")
    except OSError as err:  # Hydra writing the run dir (.hydra/, run.log): disk full, no permission
        sys.exit(f"untrac: error: cannot write {err.filename or 'the run directory'}: {err.strerror or err}")
    except KeyboardInterrupt:
        sys.exit("untrac: interrupted; every model finished so far is in the cache and will be reused")
    if FAILURES:
        sys.exit("untrac: error: some jobs failed:\n  " + "\n  ".join(FAILURES))


if __name__ == "__main__":
    main()
