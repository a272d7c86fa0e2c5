"""The entrypoint as a user runs it: one-line errors, result files, cache reuse, multirun, resume."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from untrac.parallel import available_cores
from untrac.record import CORRELATIONS, INFLUENCE, METRICS, SUMMARY, TRUTH, RunRecord
from untrac.run import sweep_jobs, sweep_size, swept_keys

REPO = Path(__file__).resolve().parents[1]
# Small enough for seconds per job, big enough for four distinct datasets and a trajectory.
SMALL = ["data.n_per_dataset=24", "train.steps=30", "train.batch_size=8", "unlearn.eval_every=8",
         "unlearn.eval_batch_size=24"]


def untrac(*args: str, tmp: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags must precede the overrides
    overrides = [a for a in args if not a.startswith("-")]
    cmd = [sys.executable, "-m", "untrac.run", *flags, f"cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'run'}",
           f"hydra.sweep.dir={tmp / 'sweep'}", *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("untrac: error")]


BAD_INPUTS = [  # (overrides, the culprit its one error line must name)
    (["method=nosuch"], "method/nosuch"),
    (["optim.lrr=1e-4"], "lrr"),
    (["method=graddot", "method.lissa_iterations=3"], "method.lissa_iterations"),  # another method's key
    (["runs=abc"], "runs"),
    (["optim.lr=0"], "optim.lr"),
    (["optim.lr=-1"], "optim.lr"),
    (["runs=0"], "runs"),
    (["groundtruth.seeds=0"], "groundtruth.seeds"),
    (["train.batch_size=100000"], "train.batch_size"),
    (["model=t5xl"], "google/t5-xl-lm-adapt"),
    (["model=opt125m", "model.name_or_path=/nowhere", "model.tokenizer=/nowhere"], "/nowhere"),
    (["data.source=csv", "data.root=/nowhere"], "/nowhere"),
    (["experiment=pile8", "testset=truthfulqa", "testset.root=/nowhere"], "/nowhere"),
    # Hydra merges a map's equal keys silently: only the raw command line shows the duplicate.
    (["data.train={a: a.jsonl, a: b.jsonl, c: c.jsonl}"], "data.train gives the key 'a' twice"),
    (["seed=-1"], "seed=-1"),
    (["cache_dir="], "cache_dir is empty"),
    (["cache_dir=README.md"], "cache_dir=README.md is a file"),  # the cwd is the repo
    (["hydra.run.dir=README.md/run"], "cannot write README.md/run: Not a directory"),
]


@pytest.mark.slow
def test_bad_input_is_one_line_naming_the_culprit(tmp_path):
    """Each bad input in a fresh interpreter, as a user meets it, exit code 1 (as the README says);
    they run side by side, one per core (a config error ~1 s; a missing model or corpus ~10 s, after torch)."""

    def run(i: int) -> subprocess.CompletedProcess:
        return untrac(*BAD_INPUTS[i][0], tmp=tmp_path / str(i), timeout=300)

    with ThreadPoolExecutor(len(available_cores())) as pool:
        procs = list(pool.map(run, range(len(BAD_INPUTS))))
    wrong = []
    for (args, culprit), proc in zip(BAD_INPUTS, procs):
        lines = error_lines(proc)
        if proc.returncode != 1 or len(lines) != 1 or culprit not in lines[0] or "Traceback" in proc.stderr:
            wrong.append(f"{' '.join(args)} (exit {proc.returncode}): {proc.stderr[-600:]}")
    assert not wrong, "\n\n".join(wrong)


def test_a_config_error_comes_before_torch_and_the_data_stack_are_imported(tmp_path):
    """Composing and checking the config imports no torch, transformers, datasets or pandas
    (``-X importtime`` lists every module imported), so the error shows in about a second."""
    cmd = [sys.executable, "-X", "importtime", "-m", "untrac.run", f"hydra.run.dir={tmp_path / 'run'}", "optim.lr=-1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert proc.returncode == 1 and "untrac: error: optim.lr must be > 0, got -1.0" in proc.stderr
    assert "untrac.config" in imported and "hydra" in imported  # the listing is real
    assert not imported & {"torch", "transformers", "datasets", "pandas", "untrac.methods"}


def test_every_bad_value_of_a_config_is_reported_at_once(tmp_path):
    """Three range errors: one error, one line per culprit (not only the first)."""
    proc = untrac("optim.lr=0", "runs=0", "model.num_heads=0", tmp=tmp_path, timeout=180)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    text = proc.stderr[proc.stderr.index("untrac: error"):]
    assert text.splitlines()[0] == "untrac: error: 3 problems in the config:"
    assert [line.split()[0] for line in text.splitlines()[1:4]] == ["model.num_heads", "optim.lr", "runs"]


@pytest.mark.slow
def test_missing_corpus_folder_is_one_line(tmp_path):
    # A valid (tiny) TruthfulQA file, so the error can only come from the corpus folder.
    rows = [{"Type": "Adversarial", "Category": "Law", "Question": f"Q{i}?", "Best Answer": "a",
             "Correct Answers": "a", "Incorrect Answers": "b; c", "Source": "s"} for i in range(70)]
    pd.DataFrame(rows).to_csv(tmp_path / "TruthfulQA.csv", index=False)
    proc = untrac("experiment=pile8", "testset=truthfulqa", f"testset.root={tmp_path}", "data.root=/nowhere",
                  tmp=tmp_path, timeout=180)
    lines = error_lines(proc)
    assert proc.returncode != 0 and len(lines) == 1 and "/nowhere" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_missing_data_file_is_exit_code_1_and_one_line_naming_it(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "a test sentence"}\n')
    (tmp_path / "code.jsonl").write_text('{"prompt": "p ", "target": "t"}\n')
    proc = untrac("data=files", f"data.train={{news: {tmp_path}/news.jsonl, code: {tmp_path}/code.jsonl}}",
                  "testset=files", f"testset.subsets={{t: {tmp_path}/t.jsonl}}", tmp=tmp_path, timeout=180)
    lines = error_lines(proc)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert lines == [f"untrac: error: data.train.news: {tmp_path}/news.jsonl not found"], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_sweep_jobs_is_hydras_expansion():
    """Params first, then the command line; a key given again keeps its place and takes the new values."""
    jobs = sweep_jobs({"method": "untrac,graddot", "seed": "range(0,2)"}, ["method=tracin", "x=1,2"])
    assert jobs == [["method=tracin", f"seed={s}", f"x={x}"] for s in (0, 1) for x in (1, 2)]
    assert sweep_jobs({"lr": "interval(0,1)"}, []) is None
    assert swept_keys({"method": "untrac,graddot", "+seed": "3"}, ["x=1,2", "y=3"]) == {"method", "seed", "x"}


def test_sweep_size_counts_experiment_and_command_line_choices():
    hydra = OmegaConf.create({"sweeper": {"params": {"data": "synthA,synthB", "method": "a,b,c"}},
                              "overrides": {"task": ["method=a,b", "seed=3", "optim=sgd,adam"]}})
    assert sweep_size(hydra) == 2 * 2 * 2
    hydra.overrides.task.append("data=synthA")  # one value for a swept key: that key no longer multiplies
    assert sweep_size(hydra) == 2 * 2
    hydra.sweeper.params["lr"] = "range(1,4)"  # Hydra's own expansion: range() counts too
    assert sweep_size(hydra) == 2 * 2 * 3
    hydra.sweeper.params["wd"] = "interval(0,1)"  # no basic-sweeper job list
    assert sweep_size(hydra) is None


def _log_of(run_dir: Path) -> str:
    return (run_dir / "run.log").read_text()


@pytest.mark.slow
def test_untrac_then_untrac_inv_reuses_theta0_and_ground_truth(tmp_path):
    start = time.perf_counter()
    first = untrac(*SMALL, tmp=tmp_path)
    first_seconds = time.perf_counter() - start
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    for name in [INFLUENCE.file, TRUTH.file, CORRELATIONS.file, SUMMARY, METRICS]:
        assert (run / name).is_file()
    influence = pd.read_csv(run / INFLUENCE.file)
    assert list(influence.columns) == list(INFLUENCE.columns)
    record = RunRecord.load(run)  # the run reads back: Hydra's config typed as it ran, the frames as written
    assert (record.config.method.name, record.config.train.steps, record.config.cache_dir) == (
        "untrac", 30, str(tmp_path / "cache"))
    pd.testing.assert_frame_equal(record.influence, influence)
    assert set(influence.train_dataset) == {"dataset1", "dataset2", "dataset3", "dataset4"}
    assert sorted(influence.step.unique()) == [0, 8, 16, 24]  # eval_every 8 over 24 batch-1 steps
    assert (influence[influence.step == 0].influence == 0).all()
    assert "Pearson" in first.stdout and "## Correlation" in (run / SUMMARY).read_text()

    start = time.perf_counter()
    second = untrac(*SMALL, "method=untrac_inv", "unlearn.batch_size=24", "hydra.run.dir=" + str(tmp_path / "inv"),
                    tmp=tmp_path)
    second_seconds = time.perf_counter() - start
    assert second.returncode == 0, second.stderr[-3000:]
    log = _log_of(tmp_path / "inv")
    assert "not in cache" not in log and log.count("reused from cache") == 5  # θ0 + four θ−Z
    assert second_seconds < first_seconds
    truth_a = pd.read_csv(run / TRUTH.file)
    truth_b = pd.read_csv(tmp_path / "inv" / TRUTH.file)
    pd.testing.assert_frame_equal(truth_a, truth_b)


@pytest.mark.slow
def test_multirun_over_methods(tmp_path):
    proc = untrac("-m", "method=untrac,untrac_inv", "unlearn.batch_size=24", *SMALL, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("[0-9]*"))
    assert [j.name for j in jobs] == ["0", "1"]
    methods = {pd.read_csv(j / INFLUENCE.file).method.iloc[0] for j in jobs}
    assert methods == {"untrac", "untrac_inv"}
    assert "[job 2/2] done" in proc.stderr  # the JobLines callback of conf/config.yaml


@pytest.mark.slow
def test_sigkill_during_ground_truth_then_resume_gives_identical_numbers(tmp_path):
    args = [*SMALL, "train.steps=80"]
    reference = untrac(*args, tmp=tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "untrac.run", f"cache_dir={interrupted / 'cache'}",
           f"hydra.run.dir={interrupted / 'killed'}", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    models = interrupted / "cache" / "models"
    deadline = time.time() + 300
    # Kill once θ0 and at least one θ−Z are stored, i.e. while the ground truth is being trained.
    while time.time() < deadline and (not models.exists() or
                                      len([p for p in models.iterdir() if not p.name.startswith(".")]) < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stored = len([p for p in models.iterdir() if not p.name.startswith(".")])
    assert 2 <= stored < 5, "the kill should land while the ground truth is being trained"

    resumed = untrac(*args, tmp=interrupted)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = _log_of(interrupted / "run")
    assert log.count("reused from cache") == stored and log.count("not in cache") == 5 - stored
    for name in [TRUTH.file, INFLUENCE.file]:
        pd.testing.assert_frame_equal(pd.read_csv(interrupted / "run" / name),
                                      pd.read_csv(tmp_path / "reference" / "run" / name))


@pytest.mark.slow
def test_sigkill_during_scoring_then_resume_redoes_only_unfinished_datasets(tmp_path):
    reference = untrac(*SMALL, tmp=tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    # One worker, so the datasets finish one by one and the kill can land between two of them.
    cmd = [sys.executable, "-m", "untrac.run", f"cache_dir={interrupted / 'cache'}",
           f"hydra.run.dir={interrupted / 'killed'}", *SMALL, "unlearn.workers=1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pieces = interrupted / "cache" / "pieces"

    def stored() -> int:
        return len([p for p in pieces.iterdir() if not p.name.startswith(".")]) if pieces.exists() else 0

    deadline = time.time() + 300
    while time.time() < deadline and stored() < 1 and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = stored()
    assert 1 <= done < 4, "the kill should land while the training datasets are being unlearned"

    resumed = untrac(*SMALL, tmp=interrupted)  # the default worker count: it is not part of the key
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"untrac: {done} of 4 unlearning runs reused from the cache" in _log_of(interrupted / "run")
    assert stored() == 4
    pd.testing.assert_frame_equal(pd.read_csv(interrupted / "run" / INFLUENCE.file),
                                  pd.read_csv(tmp_path / "reference" / "run" / INFLUENCE.file))
