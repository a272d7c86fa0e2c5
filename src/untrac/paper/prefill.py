"""Train the models a sweep needs, one Hydra job per model, into the shared cache.

Each job trains θ0 (``prefill.model=0``), one leave-dataset-out model θ−Z (``prefill.model=i``,
the i-th training dataset) or one model of the bank (``groundtruth.mode=subsets``: the order of
``untrac.groundtruth.trained_models``) of one run — for each of the run's ``groundtruth.seeds`` training seeds
(no θ−Z with ``groundtruth.mode=none``) — exactly as ``python -m untrac.run`` would (same cache key),
so the scoring jobs launched afterwards find every model in the cache. On a cluster the jobs
train at once:

    python -m untrac.paper prefill -m experiment=table2 scale=cpu method=untrac \\
        prefill.run=0,1,2 prefill.model=0,1,2,3,4 prefill.checkpoints=true hydra/launcher=submitit_slurm

A job whose model is already cached returns at once; a job outside the experiment (a run that
does not retrain because ``data.runs_vary=sample``, an index past the last dataset) does nothing.
A failure writes ``FAILED`` (one line) into the job directory and the sweep goes on.
``untrac.paper.targets`` builds these command lines from an experiment's sweep; Hydra names
these jobs ``prefill``, which the aggregator skips.
"""

import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("prefill")
FAILURES: list[str] = []


@dataclass
class PrefillJob:
    run: int = 0  # which run: its training seed is seed + run when data.runs_vary=seed
    model: int = 0  # index into groundtruth.trained_models: 0 θ0, 1…K each θ−Z, then the bank's θ−S
    checkpoints: bool = False  # with θ0, also keep the TracIn checkpoints


def _schema():
    # Built on call, as a local class: submitit (cloudpickle) then ships it by value to its workers.
    from untrac.config import Config

    @dataclass
    class PrefillConfig(Config):
        prefill: PrefillJob = field(default_factory=PrefillJob)

    return PrefillConfig


def train_one(cfg) -> str:
    """Train (or find in the cache) the one model this job stands for; return what happened."""
    import torch

    from untrac.pipeline import Experiment

    job = cfg.prefill
    if job.run >= cfg.runs or (job.run > 0 and cfg.data.runs_vary == "sample"):
        return f"run {job.run}: nothing to train (runs={cfg.runs}, data.runs_vary={cfg.data.runs_vary})"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from untrac.groundtruth import truth_seeds

    seeds = truth_seeds(cfg, job.run)  # the run's θ0 seed first, then its other ground-truth seeds
    from untrac.groundtruth import trained_models

    exp = Experiment(cfg)
    models = trained_models(list(exp.task.train), cfg)
    if job.model >= len(models):
        return (f"model {job.model}: past the {len(models)} models of groundtruth.mode={cfg.groundtruth.mode}, "
                "nothing to train")
    exclude = models[job.model]
    label = "θ0" if exclude is None else f"θ−{exclude if isinstance(exclude, str) else '+'.join(exclude)}"
    done = []
    for k, seed in enumerate(seeds if cfg.groundtruth.mode != "none" else seeds[:1]):
        torch.manual_seed(seed)
        before = exp.results.cache_hits.get("models", 0)
        # TracIn's checkpoints belong to the scored θ0 only (the first seed).
        exp.trained(seed, exclude=exclude, checkpoints=job.checkpoints and exclude is None and k == 0)
        done.append(f"{label} seed {seed}: {'already cached' if exp.results.cache_hits.get('models', 0) > before else 'trained'}")
    return "; ".join(done)


def _task(raw) -> None:
    from hydra.core.hydra_config import HydraConfig

    from untrac.checks import typed
    from untrac.record import FAILED, TRACEBACK

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        message = train_one(typed(raw))
        log.info(message)
        (out_dir / "DONE").write_text(message + "\n")
    except Exception as err:  # noqa: BLE001 - one line per failed job, the sweep goes on
        (out_dir / TRACEBACK).write_text(traceback.format_exc())
        line = " ".join(f"{type(err).__name__}: {err}".split())
        (out_dir / FAILED).write_text(line + "\n")
        log.error("job failed: %s", line)
        FAILURES.append(f"{out_dir}: {line}")


def main() -> None:
    """Hydra's entry point: the command line (``sys.argv``) holds the overrides."""
    import hydra

    from untrac.config import register_configs
    from untrac.paper import REPO

    register_configs(_schema())  # Config + the prefill keys
    conf_dir = os.environ.get("UNTRAC_CONF", str(REPO / "conf"))
    hydra.main(version_base="1.3", config_path=conf_dir, config_name="config")(_task)()
    if FAILURES:
        sys.exit("prefill: some jobs failed:\n  " + "\n  ".join(FAILURES))
