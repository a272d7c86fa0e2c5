"""The output contract of a run directory (README "Outputs", DESIGN §6) and a finished run read back.

Every file name of a run directory and the columns of every frame in it are defined here once:
the writers (``report.write_run``, the pipeline's frames, ``run.py``'s FAILED file) and the
readers (``paper.sweeps``, ``paper.aggregate``, ``paper.pooling``, tests) use these names.
``RunRecord.load(dir)`` returns the run's typed ``Config`` and its frames; a missing or malformed
file is one ``UntracError`` line naming it, and so is a directory holding ``FAILED``.

Every file is written whole or not at all (``write_atomic``); pandas is imported only where a
frame is read or written, so ``run.py`` can name these files before anything heavy loads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from untrac.errors import UntracError

if TYPE_CHECKING:
    import pandas as pd

# Columns holding names: read as text, so a dataset called "NA" or "null" stays a name, not NaN.
TEXT_COLUMNS = frozenset({"method", "train_dataset", "test_subset", "text", "removed"})  # removed: the bank's names joined by +


@dataclass(frozen=True)
class Table:
    """One CSV of a run: its file name and columns in order; ``optional`` columns may be absent
    (frames made by hand: a ground truth without ``se``), every other one must be there."""

    file: str
    columns: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c not in self.optional)

    def empty(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(columns=list(self.columns))


INFLUENCE = Table("influence.csv", ("method", "run", "train_dataset", "test_subset", "step", "is_final", "influence"))
# The S-seed mean ground truth (Eq. 1) with its standard error; header only when groundtruth.mode=none.
TRUTH = Table("ground_truth.csv", ("run", "train_dataset", "test_subset", "influence", "se", "seeds"),
              optional=("se", "seeds"))
TRUTH_SEEDS = Table("ground_truth_seeds.csv", ("run", "seed", "train_dataset", "test_subset", "influence",
                                               "loss_full", "loss_removed"), optional=("loss_full", "loss_removed"))
# Every column after spearman was added later and is derived; runs written before them still read.
# pearson_p / spearman_p: exact permutation p-values (K ≤ 8); top1: 1 when the method's first dataset
# is the truth's; ndcg: of the method's order, graded by the truth's (untrac.metrics).
CORRELATIONS = Table("correlations.csv", ("method", "run", "test_subset", "pearson", "spearman",
                                          "n_train_datasets", "finite", "pearson_p", "spearman_p", "top1", "ndcg"),
                     optional=("n_train_datasets", "finite", "pearson_p", "spearman_p", "top1", "ndcg"))
EXAMPLES = Table("examples.csv", ("method", "run", "train_dataset", "example", "test_subset", "score", "text"))
# groundtruth.mode=subsets (the bank, untrac.subsets): v(S) of every seed; removed = names joined by +, "" = none.
SUBSETS = Table("subsets.csv", ("run", "seed", "removed", "test_subset", "loss", "influence"))
LDS = Table("lds.csv", ("method", "run", "test_subset", "lds", "n_subsets"))  # group LDS over the bank
SHAPLEY = Table("shapley.csv", ("run", "train_dataset", "test_subset", "shapley", "loo"))  # every subset in the bank
# What a method's score returns: influence.csv's columns but those the pipeline adds (method, run).
SCORE_COLUMNS = [c for c in INFLUENCE.columns if c not in ("method", "run")]
RESULTS = (INFLUENCE, TRUTH, CORRELATIONS)  # every finished run has these (a sweep's job is ok with them)

SUMMARY = "summary.md"
METRICS = "metrics.json"  # written last: its presence marks a complete run directory
FAILED = "FAILED"  # one line: why the job failed (run.py, paper.plan train-models)
TRACEBACK = "traceback.txt"  # the traceback of an unexpected failure
CONFIG = ".hydra/config.yaml"  # Hydra's record of the composed config (unresolved)
HYDRA = ".hydra/hydra.yaml"
OVERRIDES = ".hydra/overrides.yaml"
MULTIRUN = "multirun.yaml"  # in a sweep directory, above its jobs


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a temporary name beside ``path``, then renamed onto it: a reader sees the
    whole file or none. An OSError (disk full, no permission) is one UntracError line naming the file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself is unusable: the error below says so
        raise UntracError(f"cannot write {path}: {err.strerror or err}") from None


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_frame(out_dir: Path, table: Table, frame: pd.DataFrame) -> None:
    """``frame`` as ``out_dir/<table.file>``, columns in contract order. A frame off the contract
    is a bug in the code that made it (not a user error), so it raises ValueError."""
    missing = [c for c in table.required if c not in frame.columns]
    extra = [c for c in frame.columns if c not in table.columns]
    if missing or extra:
        raise ValueError(f"{table.file}: frame lacks {missing} / has unknown {extra} (contract: {table.columns})")
    ordered = frame[[c for c in table.columns if c in frame.columns]]
    write_atomic(Path(out_dir) / table.file, lambda tmp: ordered.to_csv(tmp, index=False))


def read_frame(run_dir: Path, table: Table) -> pd.DataFrame:
    """``run_dir/<table.file>`` as written by ``write_frame``; UntracError naming the file when it
    is missing, unreadable, lacks a required column or has text in a numeric column."""
    import pandas as pd

    path = Path(run_dir) / table.file
    if not path.is_file():
        raise UntracError(f"{path} is missing")
    numeric = [c for c in table.columns if c not in TEXT_COLUMNS]
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in numeric},
                            dtype={c: str for c in TEXT_COLUMNS & set(table.columns)})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise UntracError(f"{path} is unreadable ({type(err).__name__})") from None
    lacking = [c for c in table.required if c not in frame.columns]
    if lacking:
        raise UntracError(f"{path} lacks column(s) {', '.join(lacking)}")
    if len(frame):  # a header-only file has no values to type
        bad = [c for c in numeric if c in frame.columns and not pd.api.types.is_numeric_dtype(frame[c])]
        if bad:
            raise UntracError(f"{path}: column(s) {', '.join(bad)} hold non-numeric values")
    return frame


def load_config(run_dir: Path):
    """The typed config of a finished run, from Hydra's ``.hydra/config.yaml``; UntracError naming
    the file when it is missing, not YAML, or not a valid config today."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    from untrac.config import typed_config

    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UntracError(f"{path} is missing (not a run directory of python -m untrac.run?)")
    try:
        return typed_config(OmegaConf.load(path))
    except (OmegaConfBaseException, YAMLError, UntracError, ValueError, TypeError) as err:
        # OmegaConf's message spans lines (message, full_key, object_type): keep the message and the key.
        key = getattr(err, "full_key", None)
        message = " ".join(str(err).split("\n    full_key")[0].split())
        raise UntracError(f"{path}: {f'{key}: ' if key else ''}{message}") from None


def read_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise UntracError(f"{path} is missing (the run did not finish)")
    try:
        metrics = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UntracError(f"{path} is not valid JSON ({type(err).__name__})") from None
    if not isinstance(metrics, dict):
        raise UntracError(f"{path} does not hold a JSON object")
    return metrics


@dataclass
class RunRecord:
    """A finished run directory read back: ``truth_seeds``, ``examples`` and the bank's frames are
    None when the run wrote none (one ground-truth seed or groundtruth.mode=none; no rank.top_k; no
    groundtruth.mode=subsets)."""

    path: Path
    config: object  # untrac.config.Config
    influence: pd.DataFrame
    truth: pd.DataFrame
    correlations: pd.DataFrame
    metrics: dict
    truth_seeds: pd.DataFrame | None = None
    examples: pd.DataFrame | None = None
    subsets: pd.DataFrame | None = None
    lds: pd.DataFrame | None = None
    shapley: pd.DataFrame | None = None

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunRecord":
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise UntracError(f"{run_dir} is not a directory")
        if (run_dir / FAILED).is_file():
            reason = (run_dir / FAILED).read_text(errors="replace").strip().splitlines() or ["(no reason written)"]
            raise UntracError(f"{run_dir} is a failed run: {reason[0]}")
        optional = {name: read_frame(run_dir, table) if (run_dir / table.file).is_file() else None
                    for name, table in (("truth_seeds", TRUTH_SEEDS), ("examples", EXAMPLES), ("subsets", SUBSETS),
                                        ("lds", LDS), ("shapley", SHAPLEY))}
        return cls(path=run_dir, config=load_config(run_dir), influence=read_frame(run_dir, INFLUENCE),
                   truth=read_frame(run_dir, TRUTH), correlations=read_frame(run_dir, CORRELATIONS),
                   metrics=read_metrics(run_dir), **optional)
