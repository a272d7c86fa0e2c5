"""The planner: every model a paper target needs, from the jobs Hydra itself would run.

With ``untrac.run``, one of the two modules that import Hydra: the rest of ``untrac.paper`` composes
through ``Composer`` and sees Hydra's and OmegaConf's errors as one-line ``UntracError``s
(``one_line_errors``); scripts compose a run's typed config with ``compose_run``.

Each experiment part's sweep is expanded by Hydra's basic sweeper (``untrac.run.sweep_jobs``: its own
``split_arguments`` over the config's ``hydra.sweeper.params`` and the command line), each job is
composed as ``python -m untrac.run`` composes it, and ``untrac.store.needed_specs`` names the
models that job looks up. Their union, one entry per cache key, is written to a JSON plan; the
Hydra multirun ``python -m untrac.paper train-models -m plan.file=<plan> plan.index=range(0,N)``
trains entry ``plan.index`` in each job, on any launcher, so the scoring sweeps that follow find
every model in the cache. A failed job writes ``FAILED`` (one line) into its directory and the
multirun goes on; Hydra names these jobs ``train-models``, which the aggregator skips.
"""

import json
import logging
import os
import sys
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from untrac.errors import UntracError
from untrac.paper import REPO
from untrac.run import inside_null_map, register_configs, sweep_jobs

log = logging.getLogger("train-models")
JOB_NAME = "train-models"
FAILURES: list[str] = []


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Hydra's and OmegaConf's errors (a bad override, an unknown option, an interpolation) raised
    inside, as one ``UntracError`` line without Hydra's ``+key=value`` hint."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except (HydraException, OmegaConfBaseException) as err:
        raise UntracError(" ".join(str(err).split()).split(" To append to your config")[0]) from err
    except AssertionError as err:  # an override inside a null map (untrac.run.inside_null_map)
        line = inside_null_map(err, sys.argv[1:])
        if line is None:
            raise
        raise UntracError(line) from err


class Composer:
    """Hydra's compose API over ``conf_dir`` (default: this checkout's conf/, or ``$UNTRAC_CONF``),
    as ``untrac.run`` sees it; its errors are one-line ``UntracError``s (``one_line_errors``)."""

    def __init__(self, conf_dir: str | Path | None = None):
        self.conf_dir = str(conf_dir or os.environ.get("UNTRAC_CONF", str(REPO / "conf")))

    def __enter__(self):
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from hydra.initialize import get_gh_backup

        register_configs()
        self._outer = get_gh_backup()  # a caller's own Hydra context comes back on exit
        GlobalHydra.instance().clear()
        self._context = initialize_config_dir(version_base="1.3", config_dir=self.conf_dir)
        with one_line_errors():
            self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        from hydra.initialize import restore_gh_from_backup

        self._context.__exit__(*exc)
        restore_gh_from_backup(self._outer)

    def __call__(self, overrides: list[str], hydra: bool = False):
        """The composed config (a DictConfig), with Hydra's own node if ``hydra``."""
        from hydra import compose

        with one_line_errors():
            return compose("config", overrides=overrides, return_hydra_config=hydra)

    def resolved(self, overrides: list[str]) -> dict:
        """The composed config as plain containers, every interpolation resolved."""
        from omegaconf import OmegaConf

        with one_line_errors():
            return OmegaConf.to_container(self(overrides), resolve=True)


def compose_run(overrides: list[str], conf_dir: str | Path | None = None):
    """The typed ``Config`` that ``python -m untrac.run <overrides>`` would run (for scripts)."""
    from untrac.config import typed_config

    with Composer(conf_dir) as compose:
        return typed_config(compose(overrides))


def part_overrides(part: str, scale: str, extra: list[str]) -> list[str]:
    """The command line of part ``part``'s scoring sweep, less the launcher's settings."""
    return [f"experiment={part}", f"scale={scale}", *(o for o in extra if not o.lstrip("+~").startswith("hydra"))]


def plain(overrides: list[str]) -> list[str]:
    """The overrides that are no sweep (what ``compose`` accepts)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with one_line_errors():
        parsed = OverridesParser.create().parse_overrides(overrides)
    return [o for o, p in zip(overrides, parsed) if not p.is_sweep_override()]


def job_configs(compose: Composer, part: str, scale: str, extra: list[str]) -> list:
    """The typed Config of every job of the part's sweep, composed once each."""
    from untrac.config import typed_config

    command = part_overrides(part, scale, extra)
    head = compose(plain(command), hydra=True)  # for the experiment's hydra.sweeper.params
    jobs = sweep_jobs(head.hydra.sweeper.params, command)
    if jobs is None:
        raise UntracError(f"experiment={part}: its sweep is not a list of jobs (interval?); the planner needs one")
    return [typed_config(compose(job)) for job in jobs]


def job_specs(cfg) -> list:
    """The models ``run_experiment(cfg)`` looks up (``untrac.store.needed_specs``)."""
    from untrac.data.prepare import dataset_names, load_train
    from untrac.methods import get
    from untrac.models import load_tokenizer, model_arch
    from untrac.store import needed_specs

    names = dataset_names(cfg.data)
    if names is None:  # data=files split by a column: only the file knows the names
        tokenizer = load_tokenizer(cfg.model)
        names = list(load_train(cfg.data, tokenizer, model_arch(cfg.model, tokenizer), Path(cfg.cache_dir)))
    return needed_specs(cfg, names, get(cfg.method.name).needs.checkpoints)


@dataclass
class Planned:
    spec: object  # untrac.store.ModelSpec
    cache_dir: str
    device: str
    threads: int | None


def union(planned: list[Planned]) -> list[Planned]:
    """One entry per store key, in first-seen order; a model also wanted with its checkpoints is
    trained once, with them."""
    from untrac.cache import make_key

    by_key: dict[tuple, Planned] = {}
    for p in planned:
        by_key.setdefault((p.cache_dir, p.spec.key()), p)
    with_ckpts = {(c, make_key(p.spec.fields())) for (c, _), p in by_key.items() if p.spec.checkpoints}
    return [p for (c, _), p in by_key.items() if p.spec.checkpoints or (c, make_key(p.spec.fields())) not in with_ckpts]


def plan_parts(parts: list[str], scale: str, extra: list[str]) -> list[Planned]:
    """The union of the models every job of ``parts`` needs."""
    planned = []
    with Composer() as compose:
        for part in parts:
            for cfg in job_configs(compose, part, scale, extra):
                planned += [Planned(s, cfg.cache_dir, cfg.device, cfg.threads) for s in job_specs(cfg)]
    return union(planned)


def pretrain_first(planned: list[Planned]) -> list[str]:
    """Build here, once, the pretrained stand-in every planned model of a ``model.pretrain`` preset starts
    from (``untrac.store.ModelStore.pretrained``, on one thread: ``untrac.pretrain.one_thread``), before the
    ``train-models`` jobs start, so that no job holds a worker while it waits on the entry's lock.
    What was done, a line per stand-in."""
    from untrac.cache import Cache, make_key
    from untrac.models import load_tokenizer, model_key, resolve_device
    from untrac.store import ModelStore

    done, lines = set(), []
    for p in planned:
        model = p.spec.model
        if model.pretrain is None:
            continue
        key = (p.cache_dir, make_key(model_key(model)))
        if key in done:
            continue
        done.add(key)
        store = ModelStore(Cache(p.cache_dir), resolve_device(p.device))
        path = store.pretrained(model, load_tokenizer(model))
        seconds = store.seconds.get("pretrain")
        lines.append(f"stand-in {model.name}: {'pretrained in %.0f s' % seconds if seconds else 'cached'} ({path})")
    return lines


def write_plan(planned: list[Planned], path: Path) -> None:
    entries = [{"key": p.spec.key(), "label": f"{p.spec.label} seed {p.spec.seed}", "cache_dir": p.cache_dir,
                "device": p.device, "threads": p.threads, **asdict(p.spec)} for p in planned]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=1, default=str))


def read_entry(path: Path, index: int) -> tuple:
    """Entry ``index`` of a plan: its ModelSpec and the cache folder, device and threads to train it with."""
    from untrac.config import DataConfig, ModelConfig, TrainConfig
    from untrac.store import ModelSpec

    e = json.loads(Path(path).read_text())[index]
    exclude = tuple(e["exclude"]) if isinstance(e["exclude"], list) else e["exclude"]
    spec = ModelSpec(ModelConfig(**e["model"]), DataConfig(**e["data"]), TrainConfig(**e["train"]), e["mode"],
                     e["seed"], exclude, e["checkpoints"])
    if spec.key() != e["key"]:  # a data file edited since planning changes its key
        raise UntracError(f"{path} entry {index} ({e['label']}): its key changed since planning (an edited data "
                          "file?); plan again")
    return spec, e["cache_dir"], e["device"], e["threads"]


def train_entry(path: Path, index: int) -> str:
    """Train (or find in the store) plan entry ``index``; what happened, in one line."""
    import torch

    from untrac.cache import Cache
    from untrac.data.prepare import load_train
    from untrac.models import load_tokenizer, model_arch, resolve_device
    from untrac.store import ModelStore, TrainingData

    spec, cache_dir, device, threads = read_entry(path, index)
    if threads:
        torch.set_num_threads(threads)
    store = ModelStore(Cache(cache_dir), resolve_device(device))
    label = f"{spec.label} seed {spec.seed}"
    if store.has(spec):
        return f"{label}: already cached"
    tokenizer = load_tokenizer(spec.model)
    arch = model_arch(spec.model, tokenizer)
    store.ensure(spec, TrainingData(tokenizer, arch, load_train(spec.data, tokenizer, arch, Path(cache_dir))))
    return f"{label}: trained"


@dataclass
class PlanJob:
    file: str = ""  # the plan written by the planner (write_plan)
    index: int = 0  # which of its entries this job trains


def _schema():
    # Built on call, as a local class: submitit (cloudpickle) then ships it by value to its workers.
    from untrac.config import Config

    @dataclass
    class TrainModelsConfig(Config):
        plan: PlanJob = field(default_factory=PlanJob)

    return TrainModelsConfig


def _task(raw) -> None:
    from hydra.core.hydra_config import HydraConfig

    from untrac.record import FAILED, TRACEBACK

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        message = train_entry(Path(raw.plan.file), int(raw.plan.index))
        log.info(message)
        (out_dir / "DONE").write_text(message + "\n")
    except Exception as err:  # noqa: BLE001 - one line per failed job, the multirun goes on
        (out_dir / TRACEBACK).write_text(traceback.format_exc())
        line = " ".join(f"{type(err).__name__}: {err}".split())
        (out_dir / FAILED).write_text(line + "\n")
        log.error("job failed: %s", line)
        FAILURES.append(f"{out_dir}: {line}")


def train_models_main() -> None:
    """Hydra's entry point of ``train-models``: the command line (``sys.argv``) holds the overrides."""
    import hydra

    register_configs(_schema())
    conf_dir = os.environ.get("UNTRAC_CONF", str(REPO / "conf"))
    hydra.main(version_base="1.3", config_path=conf_dir, config_name="config")(_task)()
    if FAILURES:
        sys.exit("train-models: some jobs failed:\n  " + "\n  ".join(FAILURES))
