"""scripts/truth_noise.py analyse: the seed-mean ground truth it prints, against numpy by hand."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "truth_noise.py"


@pytest.fixture(scope="module")
def truth_noise():
    spec = importlib.util.spec_from_file_location("truth_noise", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_seed_table(values: dict[int, dict[str, list[float]]]) -> pd.DataFrame:
    """values[seed][dataset] = influence per test subset, as `train` writes it."""
    return pd.DataFrame([{"label": "x", "testset": "synthetic", "seed": seed, "train_dataset": z,
                          "test_subset": f"s{i}", "influence": v}
                         for seed, by_z in values.items() for z, vs in by_z.items() for i, v in enumerate(vs)])


def test_the_standardised_mean_is_the_z_score_of_the_mean_over_seeds_and_subsets(truth_noise):
    rng = np.random.default_rng(3)
    names = ["d4", "d1", "d3", "d2"]  # not sorted: the datasets keep the order the table gives them
    values = {seed: {z: list(rng.normal(size=2)) for z in names} for seed in (0, 1000, 2000)}
    mean = np.array([np.mean([values[s][z] for s in values]) for z in names])
    expected = (mean - mean.mean()) / mean.std()  # population std, as the paper's rows have

    [row] = truth_noise.standardised_means(per_seed_table(values))

    assert row["seeds"] == 3
    assert row["standardised"] == "(" + ", ".join(f"{v:.2f}" for v in expected) + ")"
    assert row["nats"] == "(" + ", ".join(f"{v:.3f}" for v in mean) + ")"
    assert row["ranking"] == " > ".join(np.array(names)[np.argsort(-expected)])


def test_a_seed_still_being_written_is_left_out_of_the_mean(truth_noise):
    full = {0: {"a": [1.0], "b": [0.0], "c": [-1.0]}, 1: {"a": [3.0], "b": [0.0], "c": [-3.0]}}
    partial = per_seed_table({2: {"a": [-50.0], "b": [50.0]}})  # dataset c not yet evaluated

    [row] = truth_noise.standardised_means(pd.concat([per_seed_table(full), partial]))

    assert row["seeds"] == 2
    assert row["ranking"] == "a > b > c"
