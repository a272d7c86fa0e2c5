"""untrac.paper.figures: the figures' numbers (mean and 95 % interval over runs) and their files."""

import math

import pandas as pd
import pytest

from untrac.paper import figures, reference

SYNTH = ["dataset1", "dataset2", "dataset3", "dataset4"]


def test_ci95_is_the_t_interval():
    assert math.isnan(figures.ci95([1.0]))
    assert figures.ci95([1.0, 3.0]) == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2), rel=1e-3)


def test_figure2_plots_mean_and_band_per_training_dataset(tmp_path):
    rows = [{"data": d, "method": m, "run": r, "train_dataset": z, "test_subset": "test", "step": s,
             "influence": s * (4 - i) + r}
            for d in ("synthA", "synthB") for m in ("untrac", "untrac_inv") for r in range(3)
            for i, z in enumerate(SYNTH) for s in (0, 8, 16)]
    series = figures.figure2(pd.DataFrame(rows), tmp_path / "fig2.png")
    assert (tmp_path / "fig2.png").stat().st_size > 10_000
    point = series[(series.data == "synthA") & (series.method == "untrac") & (series.train_dataset == "dataset1")
                   & (series.step == 16)].iloc[0]
    assert point["mean"] == pytest.approx(64 + 1) and point.runs == 3 and point.ci95 > 0


def test_pearson_by_step_and_figure3(tmp_path):
    truth = pd.DataFrame([{"run": r, "train_dataset": z, "test_subset": "a", "influence": i}
                          for r in range(2) for i, z in enumerate(SYNTH)])
    influence = pd.DataFrame([{"method": "untrac", "run": r, "train_dataset": z, "test_subset": "a", "step": s,
                               "influence": i if s else -i}
                              for r in range(2) for i, z in enumerate(SYNTH) for s in (0, 1)])
    steps = figures.pearson_by_step(influence, truth, ["method"])
    assert steps.set_index(["run", "step"]).pearson.to_dict() == pytest.approx(
        {(0, 0): -1.0, (0, 1): 1.0, (1, 0): -1.0, (1, 1): 1.0})
    curves = pd.concat([steps.assign(batch_size=b, epoch=steps.step) for b in (1, 256)])
    series = figures.figure3(curves, tmp_path / "fig3.png")
    assert (tmp_path / "fig3.png").is_file()
    assert set(series.batch_size) == {1, 256} and series["mean"].tolist() == [-1, 1, -1, 1]


def test_figure4_and_heatmaps_write_pngs(tmp_path):
    truth = pd.DataFrame([{"mode": m, "run": 0, "train_dataset": c, "test_subset": s, "influence": k * (j + 1)}
                          for k, m in enumerate(("all_examples", "fixed_steps"), 1)
                          for j, c in enumerate(("pilecc", "wikipedia")) for s in ("a", "b")])
    table = figures.figure4(truth, tmp_path / "fig4.png", {"pilecc": 960, "wikipedia": 160})
    assert (tmp_path / "fig4.png").is_file()
    assert table.set_index(["mode", "train_dataset"])["mean"].to_dict() == {
        ("all_examples", "pilecc"): 1, ("all_examples", "wikipedia"): 2,
        ("fixed_steps", "pilecc"): 2, ("fixed_steps", "wikipedia"): 4}
    assert set(table.blocks) == {960, 160}
    ref = reference("table2")
    figures.heatmaps(ref[ref.data == "synthA"].set_index("method")[SYNTH], ref.set_index("method").iloc[:0],
                   tmp_path / "heat.png", "Table 2")
    assert (tmp_path / "heat.png").is_file()
