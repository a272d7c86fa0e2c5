"""``python -m untrac.run [overrides]``: the only module that knows about Hydra.

Compose the config → typed ``Config`` (range checks) → ``run_experiment`` → result files in the
run directory → print the summary. Every bad input ends as one line on stderr (``untrac: error: ...``)
and exit code 1; finished models stay in the cache, so rerunning after a fix resumes.
Until the config is checked nothing heavy is imported (no torch, transformers, datasets, pandas), so
a config error shows in the time Python and Hydra take to start.
"""

import logging
import os
import re
import sys
import traceback
from pathlib import Path

log = logging.getLogger("untrac")
FAILURES: list[str] = []


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

    from untrac.checks import duplicate_keys
    from untrac.config import register_configs
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
    except OSError as err:  # Hydra writing the run dir (.hydra/, run.log): disk full, no permission
        sys.exit(f"untrac: error: cannot write {err.filename or 'the run directory'}: {err.strerror or err}")
    except KeyboardInterrupt:
        sys.exit("untrac: interrupted; every model finished so far is in the cache and will be reused")
    if FAILURES:
        sys.exit("untrac: error: some jobs failed:\n  " + "\n  ".join(FAILURES))


if __name__ == "__main__":
    main()
