"""untrac.record: a run written by the real writer reads back equal and typed; a missing or
malformed file is one UntracError line naming it."""

import re
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from untrac import record
from untrac.config import Config
from untrac.errors import UntracError
from untrac.metrics import correlations
from untrac.record import RunRecord
from untrac.report import RunReport, write_run

REPO = Path(__file__).resolve().parents[1]
# "NA" and "null" are dataset names a user may choose: they must come back as names, not NaN.
DATASETS = ["NA", "null", "c"]


@pytest.fixture(scope="module")
def composed(compose):
    """A config composed from the real conf/ as `python -m untrac.run method=graddot runs=2 rank.top_k=1` would."""
    return compose("method=graddot", "runs=2", "rank.top_k=1", "groundtruth.seeds=2")


def frames() -> dict[str, pd.DataFrame]:
    seeds = pd.DataFrame([{"run": r, "seed": r + 1000 * k, "train_dataset": z, "test_subset": s,
                           "influence": float(i + k + r), "loss_full": 1.0, "loss_removed": 1.0 + i + k + r}
                          for r in range(2) for k in range(2) for i, z in enumerate(DATASETS) for s in ("t", "u")])
    truth = seeds.groupby(["run", "train_dataset", "test_subset"], sort=False).influence.agg(["mean", "std", "count"])
    truth = truth.reset_index().rename(columns={"mean": "influence", "std": "se", "count": "seeds"})
    truth["se"] /= 2 ** 0.5
    influence = truth[["run", "train_dataset", "test_subset"]].assign(
        method="graddot", step=0, is_final=True, influence=truth.influence * ([1.0, -1.0, 0.5] * 4))
    examples = pd.DataFrame({"method": "graddot", "run": [0, 1], "train_dataset": ["NA", "c"], "example": [3, 0],
                             "test_subset": "t", "score": [0.5, float("nan")], "text": ["a, \"quoted\"\nline", "b"]})
    return {"influence": influence[list(record.INFLUENCE.columns)], "truth": truth[list(record.TRUTH.columns)],
            "truth_seeds": seeds, "examples": examples}


def write(run_dir: Path, raw, with_optional: bool = True) -> dict[str, pd.DataFrame]:
    """A run directory as python -m untrac.run leaves it: Hydra's config, then write_run's files."""
    f = frames()
    (run_dir / record.CONFIG).parent.mkdir(parents=True)
    OmegaConf.save(raw, run_dir / record.CONFIG)
    write_run(run_dir, RunReport(f["influence"], f["truth"], "demo", seconds={"score": 1.0}, counters={"passes": 3},
                                 truth_seeds=f["truth_seeds"] if with_optional else None,
                                 examples=f["examples"] if with_optional else None))
    return f


def test_a_written_run_reads_back_equal_frames_and_its_typed_config(tmp_path, composed):
    written = write(tmp_path, composed)
    rec = RunRecord.load(tmp_path)
    assert isinstance(rec.config, Config) and rec.config == OmegaConf.to_object(composed)
    assert (rec.config.method.name, rec.config.runs, rec.config.rank.top_k) == ("graddot", 2, 1)
    for name in ("influence", "truth", "truth_seeds", "examples"):
        pd.testing.assert_frame_equal(getattr(rec, name), written[name], obj=name)
    pd.testing.assert_frame_equal(rec.correlations, correlations(written["influence"], written["truth"]))
    assert set(rec.truth.train_dataset) == set(DATASETS)  # names, not NaN
    assert rec.metrics["counters"] == {"passes": 3} and rec.metrics["seconds"] == {"score": 1.0}
    assert set(rec.metrics["correlation"]) == {"graddot"}


def test_optional_files_absent_read_as_none(tmp_path, composed):
    write(tmp_path, composed, with_optional=False)
    assert not (tmp_path / record.EXAMPLES.file).exists()
    rec = RunRecord.load(tmp_path)
    assert rec.truth_seeds is None and rec.examples is None and len(rec.influence) == 12


DAMAGE = {
    "missing influence": (record.INFLUENCE.file, None, "is missing"),
    "missing truth": (record.TRUTH.file, None, "is missing"),
    "missing correlations": (record.CORRELATIONS.file, None, "is missing"),
    "missing metrics": (record.METRICS, None, "is missing"),
    "missing config": (record.CONFIG, None, "is missing"),
    "empty csv": (record.CORRELATIONS.file, "", "is unreadable"),
    "foreign csv": (record.INFLUENCE.file, "a,b\n1,2\n", "lacks column(s) method, run"),
    "text in a number column": (record.TRUTH.file, "run,train_dataset,test_subset,influence\n0,a,t,oops\n",
                                "column(s) influence hold non-numeric values"),
    "ragged csv": (record.EXAMPLES.file, "method,run,train_dataset,example,test_subset,score,text\n\"m,0\n",
                   "is unreadable"),
    "truncated json": (record.METRICS, '{"correlation": {', "is not valid JSON"),
    "unknown config key": (record.CONFIG, "runs: 2\nnot_a_key: 1\n", "not_a_key"),
    "config of the wrong type": (record.CONFIG, "runs: many\n", "runs"),
    "config out of range": (record.CONFIG, "runs: 0\n", "runs must be > 0"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_missing_or_malformed_file_is_one_line_naming_it(tmp_path, composed, case):
    name, content, problem = DAMAGE[case]
    write(tmp_path, composed)
    path = tmp_path / name
    path.unlink() if content is None else path.write_text(content)
    with pytest.raises(UntracError) as err:
        RunRecord.load(tmp_path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)) and problem in message


def test_not_a_directory(tmp_path):
    with pytest.raises(UntracError, match="is not a directory"):
        RunRecord.load(tmp_path / "nowhere")


def test_a_frame_off_the_contract_is_not_written(tmp_path):
    influence = frames()["influence"]
    with pytest.raises(ValueError, match="influence.csv"):
        record.write_frame(tmp_path, record.INFLUENCE, influence.drop(columns="step"))
    with pytest.raises(ValueError, match="unknown"):
        record.write_frame(tmp_path, record.INFLUENCE, influence.assign(extra=1))


def test_the_readme_documents_the_contract():
    """README's table of outputs lists each file with exactly the contract's columns."""
    readme = (REPO / "README.md").read_text()
    for table in (record.INFLUENCE, record.TRUTH, record.TRUTH_SEEDS, record.CORRELATIONS, record.EXAMPLES,
                  record.SUBSETS, record.LDS, record.SHAPLEY):
        documented = re.findall(rf"`{re.escape(table.file)}`\s*(?:\|\s*)?:?\s*`([^`]+)`", readme)
        assert ", ".join(table.columns) in documented, table.file


def test_a_run_written_before_the_derived_correlation_columns_still_reads(tmp_path, composed):
    write(tmp_path, composed)
    path = tmp_path / record.CORRELATIONS.file
    pd.read_csv(path).drop(columns=list(record.CORRELATIONS.optional)).to_csv(path, index=False)
    assert list(RunRecord.load(tmp_path).correlations.columns) == list(record.CORRELATIONS.required)


def test_a_run_without_ground_truth_reads_back_empty_truth_and_correlations(tmp_path, composed):
    """groundtruth.mode=none writes header-only ground_truth.csv and correlations.csv."""
    f = frames()
    (tmp_path / record.CONFIG).parent.mkdir(parents=True)
    OmegaConf.save(composed, tmp_path / record.CONFIG)
    write_run(tmp_path, RunReport(f["influence"], record.TRUTH.empty(), "demo"))
    rec = RunRecord.load(tmp_path)
    assert rec.truth.empty and list(rec.truth.columns) == list(record.TRUTH.columns)
    assert rec.correlations.empty and "no_correlations" in rec.metrics
    pd.testing.assert_frame_equal(rec.influence, f["influence"])


def test_a_failed_run_is_refused_by_its_reason(tmp_path, composed):
    write(tmp_path, composed)  # complete-looking files, yet the job failed after writing them
    (tmp_path / record.FAILED).write_text("cannot write x: No space left on device\n")
    with pytest.raises(UntracError, match=rf"^{re.escape(str(tmp_path))} is a failed run: cannot write x: No space"):
        RunRecord.load(tmp_path)


def test_a_file_that_cannot_be_written_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """Disk full on the rename of one file (os.replace): one UntracError naming it, the old content
    untouched, no temporary file left beside it."""
    import errno
    import os

    target = tmp_path / record.SUMMARY
    target.write_text("previous\n")
    real_replace = os.replace

    def full(src, dst):
        if Path(dst).name == record.SUMMARY:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(UntracError) as err:
        record.write_text(target, "new\n")
    assert str(err.value) == f"cannot write {target}: No space left on device"
    assert target.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == [record.SUMMARY]
    record.write_frame(tmp_path, record.INFLUENCE, frames()["influence"])  # another file still writes
    assert (tmp_path / record.INFLUENCE.file).is_file()
