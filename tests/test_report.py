import json

import pandas as pd
import pytest

from untrac.record import CORRELATIONS, EXAMPLES, INFLUENCE, METRICS, SUMMARY, TRUTH, TRUTH_SEEDS
from untrac.report import RunReport, write_run, write_table


def _results():
    truth = pd.DataFrame({"run": [0] * 3 + [1] * 3, "train_dataset": list("abc") * 2, "test_subset": "t",
                          "influence": [3.0, 2.0, 1.0, 3.0, 1.0, 2.0]})
    influence = truth.assign(method="untrac", step=5, is_final=True)
    influence.loc[5, "influence"] = float("nan")  # a non-finite unlearning run
    influence = influence[list(INFLUENCE.columns)]
    return influence, truth


def test_write_run_produces_the_output_contract(tmp_path):
    influence, truth = _results()
    text = write_run(tmp_path, RunReport(influence, truth, "demo", seconds={"score": 1.5},
                                           counters={"nonfinite": [{"unlearned": "c", "step": 2}]}))
    for name in [INFLUENCE.file, TRUTH.file, CORRELATIONS.file, SUMMARY, METRICS]:
        assert (tmp_path / name).is_file()
    corr = pd.read_csv(tmp_path / CORRELATIONS.file)
    assert corr.pearson[0] == pytest.approx(1.0) and pd.isna(corr.pearson[1])  # NaN influence → NaN, not a number
    assert list(corr.finite) == [True, False]
    metrics = json.loads((tmp_path / METRICS).read_text())  # strict JSON: NaN became null
    assert metrics["correlation"]["untrac"]["pearson_mean"] == pytest.approx(1.0)
    assert metrics["truth_agreement"]["pearson"] == pytest.approx(0.5)
    counts = metrics["correlation"]["untrac"]
    assert (counts["subsets_scored"], counts["subsets_total"]) == (1, 2)
    assert "| 1 / 2 " in text  # the summary's "subsets scored" column
    assert "Non-finite" in text and "noise floor" in text and "| untrac" in text


def test_write_table_three_formats(tmp_path):
    frame = pd.DataFrame({"Pearson": ["0.4 ± 0.1"]}, index=pd.Index(["UnTrac"], name="method"))
    write_table(frame, tmp_path / "t", caption="Table")
    assert pd.read_csv(tmp_path / "t.csv", index_col=0).loc["UnTrac", "Pearson"] == "0.4 ± 0.1"
    assert "UnTrac" in (tmp_path / "t.md").read_text() and "\\begin{tabular}" in (tmp_path / "t.tex").read_text()


def test_write_run_with_seeds_writes_them_and_says_what_the_floor_compares(tmp_path):
    influence, _ = _results()
    influence = influence[influence.run == 0]
    per_seed = pd.DataFrame({"run": 0, "seed": [s for s in (0, 1000, 2000, 3000) for _ in range(3)],
                             "train_dataset": list("abc") * 4, "test_subset": "t",
                             "influence": [3.0, 2.0, 1.0, 3.0, 1.0, 2.0, 2.0, 3.0, 1.0, 3.0, 2.0, 0.0]})
    truth = per_seed.groupby(["run", "train_dataset", "test_subset"], as_index=False).influence.mean()
    text = write_run(tmp_path, RunReport(influence, truth, "demo", retrained_truth=False, truth_seeds=per_seed))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / TRUTH_SEEDS.file), per_seed)
    floor = json.loads((tmp_path / METRICS).read_text())["truth_agreement"]
    assert floor["compares"] == "halves" and floor["seeds_per_half"] == 2
    assert "2 vs 2 seeds" in text and "Spearman–Brown" in text and "mean of all 4 seeds" in text
    assert "between_runs" not in floor and "Between runs" not in text  # one run (and runs_vary=sample)
    # Two runs that retrain, each with its own 4 seeds: their 4-seed means are compared too.
    two = pd.concat([per_seed, per_seed.assign(run=1, seed=per_seed.seed + 1, influence=per_seed.influence[::-1].values)])
    truth = two.groupby(["run", "train_dataset", "test_subset"], as_index=False).influence.mean()
    text = write_run(tmp_path, RunReport(_results()[0], truth, "demo", retrained_truth=True, truth_seeds=two))
    runs = json.loads((tmp_path / METRICS).read_text())["truth_agreement"]["between_runs"]
    assert runs["pairs"] == 1 and f"Spearman {runs['spearman']:.3f}." in text
    assert "Between runs, each with its own 4 seeds (1 run pairs × subsets)" in text


def test_summary_flags_a_diverged_hif_solve(tmp_path):
    influence, truth = _results()
    solver = [{"method": "hif_lissa", "variant": "default", "operator": "ggn", "damping": 0.01, "lambda_max": 150.0,
               "scale": 20.0, "iterations": 10, "residual": {"t": 3e8}, "status": "diverged"},
              {"method": "hif_arnoldi", "variant": "default", "operator": "ggn", "damping": 0.01, "kept": 25,
               "min_denominator": 0.05, "residual": {"t": 0.9}, "status": "low-rank"}]
    text = write_run(tmp_path, RunReport(influence, truth, "demo", counters={"hif_solver": solver}))
    lines = [line for line in text.splitlines() if line.startswith("- run")]
    assert "**diverged**" in lines[0] and "do not trust" in lines[0] and "3e+08" in lines[0]
    assert "**low-rank**" in lines[1] and "do not trust" not in lines[1]
    assert json.loads((tmp_path / METRICS).read_text())["counters"]["hif_solver"][0]["status"] == "diverged"


def test_without_ground_truth_the_summary_ranks_datasets_and_says_why_no_correlations(tmp_path):
    influence, truth = _results()
    no_truth = truth.iloc[0:0].reindex(columns=list(TRUTH.columns))
    examples = pd.DataFrame({"method": "untrac", "run": 0, "train_dataset": "a", "example": [3], "test_subset": "t",
                             "score": [0.5], "text": ["x"]})
    text = write_run(tmp_path, RunReport(influence[influence.run == 0], no_truth, "demo", examples=examples))
    assert pd.read_csv(tmp_path / CORRELATIONS.file).empty
    assert "No correlations: groundtruth.mode=none" in text and "noise floor" not in text
    # ranking: run 0's influences 3, 2, 1 for a, b, c — highest first
    assert "| untrac   | t             | a (3) | b (2) | c (1) |" in text
    assert json.loads((tmp_path / METRICS).read_text())["correlation"] == {}
    assert list(pd.read_csv(tmp_path / EXAMPLES.file).columns) == list(examples.columns)


def test_summary_shows_the_bootstrap_interval(tmp_path):
    influence, truth = _results()
    truth = pd.concat([truth, truth.assign(test_subset="u", influence=truth.influence[::-1].to_numpy())])
    influence = truth.assign(method="untrac", step=5, is_final=True, influence=[3.0, 2.0, 1.0, 3.0, 2.5, 2.0,
                                                                                1.0, 2.0, 3.0, 2.0, 1.0, 3.0])
    text = write_run(tmp_path, RunReport(influence, truth, "demo"))
    metrics = json.loads((tmp_path / METRICS).read_text())["correlation"]["untrac"]
    low, high = metrics["pearson_ci_low"], metrics["pearson_ci_high"]
    assert low <= metrics["pearson_mean"] <= high
    assert f"[{low:.3f}, {high:.3f}]" in text


def test_summary_and_metrics_say_what_theta0_is(tmp_path):
    influence, truth = _results()
    text = write_run(tmp_path, RunReport(influence, truth, "demo", theta0="checkpoint /ckpt as saved, not trained"))
    assert "θ0, the model every method scored: checkpoint /ckpt as saved, not trained." in text.splitlines()
    assert text == (tmp_path / SUMMARY).read_text()
    assert json.loads((tmp_path / METRICS).read_text())["theta0"] == "checkpoint /ckpt as saved, not trained"


def test_a_write_error_midway_leaves_no_metrics_json(tmp_path, monkeypatch):
    """Disk full while writing summary.md: one line naming it, and no metrics.json, the file that
    marks a run directory complete."""
    import errno
    import os

    from untrac.errors import UntracError

    real_replace = os.replace

    def full(src, dst):
        if str(dst).endswith(SUMMARY):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(UntracError, match=f"^cannot write {tmp_path / SUMMARY}: No space left on device$"):
        write_run(tmp_path, RunReport(*_results(), "demo"))
    assert (tmp_path / INFLUENCE.file).is_file() and not (tmp_path / METRICS).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_the_bank_writes_its_files_and_a_summary_section(tmp_path):
    """groundtruth.mode=subsets: subsets.csv, lds.csv and shapley.csv in the contract, LDS and
    Shapley in summary.md and metrics.json; an exactly additive bank gives LDS 1 and additivity 1."""
    from untrac.record import RunRecord  # noqa: F401  (the frames read back below)
    from untrac.subsets import every_subset

    names = ["a", "b", "c", "d"]
    effect = {"a": 2.0, "b": -1.0, "c": 0.5, "d": 0.25}
    truth = pd.DataFrame({"run": 0, "train_dataset": names, "test_subset": "t", "influence": list(effect.values())})
    influence = pd.DataFrame({"method": "m", "run": 0, "train_dataset": names, "test_subset": "t", "step": 0,
                              "is_final": True, "influence": [3 * v for v in effect.values()]})
    subsets = pd.DataFrame([{"run": 0, "seed": seed, "removed": "+".join(sorted(s)), "test_subset": "t",
                             "loss": 1.0 + sum(effect[z] for z in s), "influence": sum(effect[z] for z in s)}
                            for seed in (0, 1000) for s in every_subset(names)])
    text = write_run(tmp_path, RunReport(influence, truth, "demo", subsets=subsets))
    lds = pd.read_csv(tmp_path / "lds.csv")
    assert list(lds.columns) == ["method", "run", "test_subset", "lds", "n_subsets"]
    assert lds.lds.item() == pytest.approx(1.0) and lds.n_subsets.item() == 15
    shapley = pd.read_csv(tmp_path / "shapley.csv").set_index("train_dataset")
    assert shapley.shapley.to_dict() == pytest.approx(effect) and shapley.loo.to_dict() == pytest.approx(effect)
    assert len(pd.read_csv(tmp_path / "subsets.csv", keep_default_na=False)) == 32
    assert "## The bank of subset retrains" in text and "Additivity" in text and "Top-k removal" in text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["bank"]["lds"]["m"] == pytest.approx(1.0) and metrics["bank"]["additivity"] == pytest.approx(1.0)
    assert metrics["bank"]["lds_floor"] == pytest.approx(1.0)  # two identical seeds agree exactly
    assert (tmp_path / "summary.md").read_text() == text


def test_the_bank_files_read_back(tmp_path):
    """subsets.csv's ``removed`` is text ("" for none): RunRecord's reader keeps it, and lds/shapley read."""
    from untrac.record import LDS, SHAPLEY, SUBSETS, read_frame

    test_the_bank_writes_its_files_and_a_summary_section(tmp_path)
    subsets = read_frame(tmp_path, SUBSETS)
    assert subsets.removed.iloc[0] == "" and "a+b" in set(subsets.removed)
    assert len(read_frame(tmp_path, LDS)) == 1 and len(read_frame(tmp_path, SHAPLEY)) == 4
