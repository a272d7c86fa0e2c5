"""untrac.paper.aggregate (with .sweeps and .pooling) on fake sweep directories laid out as Hydra leaves them.

The job configs are composed from the real conf/ (so config groups set their real keys); the
results are made up so that the expected correlations are known.
"""

import itertools
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from untrac.paper import aggregate, pooling, sweeps
from untrac.record import CONFIG, CORRELATIONS, HYDRA, INFLUENCE, MULTIRUN, OVERRIDES, TRUTH

REPO = Path(__file__).resolve().parents[2]
CORPORA = ["bookcorpus", "ccstories", "ccnews", "gutenberg", "hackernews", "openwebtext2", "pilecc", "wikipedia"]


@pytest.fixture(scope="module")
def composer():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from untrac.run import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        yield lambda overrides: OmegaConf.to_container(compose("config", overrides=overrides))
    GlobalHydra.instance().clear()


def results(sign: float, runs: int = 2) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Ground truth i per corpus i; the estimate is sign × truth: Pearson = sign in every subset."""
    from untrac.metrics import correlations

    truth = pd.DataFrame([{"run": r, "train_dataset": z, "test_subset": s, "influence": float(i)}
                          for r in range(runs) for i, z in enumerate(CORPORA) for s in ("a", "b")])
    influence = truth.assign(method="m", step=10, is_final=True, influence=sign * truth.influence)
    influence = influence[list(INFLUENCE.columns)]
    return influence, truth, correlations(influence, truth)


def make_sweep(root: Path, composer, experiment: str, params: dict[str, str], task: tuple[str, ...] = ()) -> list:
    """A finished multirun: multirun.yaml, and per job .hydra/{config,overrides,hydra}.yaml + results."""
    root.mkdir(parents=True)
    multirun = {"hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                      "max_batch_size": None, "params": params},
                          "overrides": {"task": [f"experiment={experiment}", *task]}, "job": {"name": "run"}}}
    (root / MULTIRUN).write_text(yaml.safe_dump(multirun))
    combos = [[f"{k}={v}" for k, v in zip(params, values)]
              for values in itertools.product(*(str(v).split(",") for v in params.values()))]
    jobs = []
    for num, combo in enumerate(combos):
        overrides = [*combo, f"experiment={experiment}", *task]
        job = root / str(num)
        (job / CONFIG).parent.mkdir(parents=True)
        config = composer(overrides)
        (job / CONFIG).write_text(yaml.safe_dump(config))
        (job / OVERRIDES).write_text(yaml.safe_dump(overrides))
        hydra = {"hydra": {"job": {"num": num, "name": "run"}, "runtime": {"config_sources": [
            {"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
            {"path": str(REPO / "conf"), "schema": "file", "provider": "main"}]}}}
        (job / HYDRA).write_text(yaml.safe_dump(hydra))
        influence, truth, corr = results(-1.0 if config["method"]["name"] == "graddot" else 1.0)
        influence.assign(method=config["method"]["name"]).to_csv(job / INFLUENCE.file, index=False)
        truth.to_csv(job / TRUTH.file, index=False)
        corr.assign(method=config["method"]["name"]).to_csv(job / CORRELATIONS.file, index=False)
        jobs.append(job)
    return jobs


TABLE3 = {"method": "untrac,graddot", "testset": "toxigen,winobias"}
# A perfect correlation over the 8 pile8 corpora: exact two-sided permutation p = 2 / 8!.
PERFECT_P = f" p={2 / math.factorial(8):.3g}"


def test_complete_sweep_becomes_table3_beside_the_paper(tmp_path, composer, capsys):
    make_sweep(tmp_path / "sweep", composer, "table3", TABLE3)
    assert aggregate.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0  # target from the config
    table = pd.read_csv(tmp_path / "out" / "tables" / "table3.csv", index_col=0)
    assert table.loc["UnTrac (measured)", "Equal ToxiGen"] == "1.000 ± 0.000" + PERFECT_P
    assert table.loc["GradDot (measured)", "Equal WinoBias"] == "-1.000 ± 0.000" + PERFECT_P
    assert table.loc["UnTrac (paper)", "Equal ToxiGen"] == "0.419 ± 0.063"
    md = (tmp_path / "out" / "tables" / "table3.md").read_text()
    assert "4 ok" in md and "FAILED" not in md
    # 2 runs × 2 subsets per job, two test sets per method
    assert "pairs scored / total: UnTrac 8/8, GradDot 8/8" in md
    assert (tmp_path / "out" / "tables" / "table3.tex").is_file()
    assert (tmp_path / "out" / "figures" / "table3.png").is_file()
    # The same sweep as Table 5 (Spearman), found from the folder above it.
    assert aggregate.main([str(tmp_path), "--target", "table5", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "tables" / "table5.md").is_file()


def test_an_unreadable_sweep_override_is_one_line_and_exit_1(tmp_path, composer, capsys):
    from untrac.paper.__main__ import main

    make_sweep(tmp_path / "sweep", composer, "table3", TABLE3)
    multirun = yaml.safe_load((tmp_path / "sweep" / MULTIRUN).read_text())
    multirun["hydra"]["sweeper"]["params"]["method"] = "untrac,(graddot"  # an unclosed group
    (tmp_path / "sweep" / MULTIRUN).write_text(yaml.safe_dump(multirun))
    assert main(["aggregate", str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("untrac.paper: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_failed_missing_and_incomplete_jobs_are_listed_not_fatal(tmp_path, composer, capsys):
    jobs = make_sweep(tmp_path / "sweep", composer, "table3", TABLE3)
    for name in (INFLUENCE.file, CORRELATIONS.file):
        (jobs[1] / name).unlink()
    (jobs[1] / "FAILED").write_text("UntracError: testset winobias: something went wrong\n")
    for name in (INFLUENCE.file, TRUTH.file, CORRELATIONS.file):
        (jobs[2] / name).unlink()  # killed mid-run: no results, no FAILED
    for path in sorted(jobs[3].rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    jobs[3].rmdir()  # never started

    assert aggregate.main([str(tmp_path / "sweep"), "--target", "table3", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "out" / "tables" / "table3.md").read_text()
    for text in (printed, md):
        assert "1 ok" in text
        assert "FAILED" in text and "something went wrong" in text and "method=graddot testset=toxigen" in text
        assert "INCOMPLETE" in text
        assert "MISSING" in text and "method=graddot testset=winobias" in text
    table = pd.read_csv(tmp_path / "out" / "tables" / "table3.csv", index_col=0)
    assert table.loc["UnTrac (measured)", "Equal ToxiGen"] == "1.000 ± 0.000" + PERFECT_P


def test_unreadable_results_count_as_failed(tmp_path, composer, capsys):
    jobs = make_sweep(tmp_path / "sweep", composer, "table3", TABLE3)
    (jobs[0] / CORRELATIONS.file).write_text("")
    (jobs[1] / INFLUENCE.file).write_text("a,b\n1,2\n")
    assert aggregate.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "2 ok, 2 failed" in printed
    assert f"{CORRELATIONS.file} is unreadable" in printed and f"{INFLUENCE.file} lacks column(s)" in printed


def test_config_differing_in_an_unswept_key_is_refused_or_split(tmp_path, composer, capsys):
    jobs = make_sweep(tmp_path / "sweep", composer, "table3", TABLE3)
    config = yaml.safe_load((jobs[2] / CONFIG).read_text())
    preset_steps = config["train"]["steps"]  # the experiment file's value, whatever it is today
    assert preset_steps != 999
    config["train"]["steps"] = 999  # e.g. a job rerun after the experiment file changed
    (jobs[2] / CONFIG).write_text(yaml.safe_dump(config))
    out = tmp_path / "out"

    assert aggregate.main([str(tmp_path / "sweep"), "--out", str(out)]) == 3
    assert "train.steps" in capsys.readouterr().err
    assert not (out / "tables" / "table3.md").exists()

    assert aggregate.main([str(tmp_path / "sweep"), "--out", str(out), "--split"]) == 0
    first, second = ((out / "tables" / f"table3-cfg{i}.md").read_text() for i in (1, 2))
    assert f"train.steps={preset_steps}" in first and "train.steps=999" in second


@pytest.mark.slow  # 3-5 s
def test_two_sweeps_are_pooled_when_only_swept_keys_differ(tmp_path, composer):
    """Table 4's halves: optimizers at the default lr, and Adam over learning rates."""
    make_sweep(tmp_path / "a", composer, "table4", {"method": "untrac,untrac_inv", "optim": "sgd,adam"})
    make_sweep(tmp_path / "b", composer, "table4_lr",
               {"method": "untrac,untrac_inv", "optim": "adam", "optim.lr": "5e-6,1e-4"})
    jobs, swept = [], set()
    for sweep in sweeps.find_sweeps([tmp_path]):
        found, keys = sweeps.read_jobs(sweep)
        jobs, swept = jobs + found, swept | keys
    assert {"method", "optim", "optim.lr"} <= swept
    # method=untrac_inv changes unlearn.* and optim= changes optim.*: both explained by the sweep.
    assert pooling.inconsistencies(jobs, swept) == []
    assert aggregate.main([str(tmp_path), "--target", "table4", "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "tables" / "table4.csv", index_col=0)
    assert table.loc["UnTrac (measured)", "SGD"] == "1.000 ± 0.000" + PERFECT_P
    assert table.loc["UnTrac (measured)", "lr 1e-04"] == "1.000 ± 0.000" + PERFECT_P
    assert table.loc["UnTrac (measured)", "Adam"] == table.loc["UnTrac (measured)", "lr 5e-05"]


def test_a_key_set_by_a_swept_group_must_still_follow_that_group(tmp_path, composer, capsys):
    """unlearn.eval_every is set by the method group, but two untrac jobs may not disagree on it."""
    make_sweep(tmp_path / "a", composer, "table3", {"method": "untrac,graddot", "testset": "toxigen"})
    make_sweep(tmp_path / "b", composer, "table3", {"method": "untrac,graddot", "testset": "winobias"},
               task=("unlearn.eval_every=7",))
    jobs, swept = [], set()
    for sweep in sweeps.find_sweeps([tmp_path]):
        found, keys = sweeps.read_jobs(sweep)
        jobs, swept = jobs + found, swept | keys
    assert pooling.inconsistencies(jobs, swept) == ["unlearn.eval_every"]
    assert aggregate.main([str(tmp_path), "--target", "table3", "--out", str(tmp_path / "out")]) == 3


def test_expected_jobs_follow_hydra_basic_sweeper_order(tmp_path, composer):
    make_sweep(tmp_path / "s", composer, "table3", TABLE3, task=("runs=2",))
    expected, swept = sweeps.expected_jobs(tmp_path / "s")
    assert swept == {"method", "testset"}
    assert [job[:2] for job in expected] == [["method=untrac", "testset=toxigen"], ["method=untrac", "testset=winobias"],
                                              ["method=graddot", "testset=toxigen"], ["method=graddot", "testset=winobias"]]


def test_expansion_matches_the_basic_sweepers_rules(tmp_path):
    """Params first, then the command line; a key given twice keeps its first place and its last
    values; range() expands; fixed overrides are part of every job."""
    multirun = {"hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                      "params": {"method": "untrac,graddot", "seed": "range(0,2)"}},
                          "overrides": {"task": ["experiment=table3", "method=tracin,untrac", "+x=1"]}}}
    (tmp_path / MULTIRUN).write_text(yaml.safe_dump(multirun))
    expected, swept = sweeps.expected_jobs(tmp_path)
    assert swept == {"method", "seed"}
    assert expected == [[f"method={m}", f"seed={s}", "experiment=table3", "+x=1"]
                        for m in ("tracin", "untrac") for s in (0, 1)]
    multirun["hydra"]["sweeper"]["_target_"] = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    (tmp_path / MULTIRUN).write_text(yaml.safe_dump(multirun))
    assert sweeps.expected_jobs(tmp_path) == (None, {"method", "seed"})  # another sweeper: jobs as found


@pytest.mark.parametrize("job_name", ["train-models", "prefill"])  # prefill: sweeps made before the planner
def test_model_training_sweeps_are_skipped_and_no_sweep_is_an_error(tmp_path, composer, capsys, job_name):
    (tmp_path / job_name).mkdir()
    (tmp_path / job_name / MULTIRUN).write_text(yaml.safe_dump({"hydra": {"job": {"name": job_name}}}))
    assert sweeps.find_sweeps([tmp_path]) == []
    assert aggregate.main([str(tmp_path)]) == 1
    assert "no sweep" in capsys.readouterr().err


def test_fig4_reads_the_corpus_sizes_from_the_jobs_typed_config(tmp_path, composer):
    make_sweep(tmp_path / "sweep", composer, "fig4", {"data.sizes": "different", "testset": "toxigen",
                                                         "method": "graddot",
                                                         "groundtruth.mode": "all_examples,fixed_steps"})
    assert aggregate.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "figures" / "fig4.png").is_file()
    plotted = pd.read_csv(tmp_path / "out" / "tables" / "fig4.csv")
    assert len(plotted) and plotted.notna().all().all()
    assert plotted.blocks.nunique() > 1  # data.sizes=different, read from the typed config
