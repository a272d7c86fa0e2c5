"""The bank's statistics on toy games whose answers are known by hand (DESIGN §2)."""

import itertools
import math

import pytest

from untrac.subsets import additivity, every_subset, group_lds, shapley, top_k_removal

NAMES = ["a", "b", "c", "d"]


def game(fn) -> dict[frozenset, float]:
    return {s: fn(s) for s in every_subset(NAMES)}


def test_every_subset_is_the_power_set():
    subsets = every_subset(NAMES)
    assert len(subsets) == 16 == len(set(subsets))
    assert subsets[0] == frozenset() and subsets[-1] == frozenset(NAMES)


def test_shapley_efficiency_and_symmetry_on_a_game_with_interactions():
    # a and b are interchangeable and only matter together (removing both costs 3); c adds 1; d nothing.
    v = game(lambda s: 3.0 * ({"a", "b"} <= s) + 1.0 * ("c" in s) + 0.5 * ("a" in s and "c" in s))
    phi = shapley(v, NAMES)
    assert sum(phi.values()) == pytest.approx(v[frozenset(NAMES)] - 0.0, abs=1e-12)  # efficiency
    assert phi["d"] == pytest.approx(0.0, abs=1e-12)  # a null player
    # a = b on the pair term (1.5 each), a and c split their shared 0.5
    assert phi["a"] == pytest.approx(1.5 + 0.25) and phi["b"] == pytest.approx(1.5)
    assert phi["c"] == pytest.approx(1.0 + 0.25)


def test_shapley_of_an_additive_game_is_leave_one_out_and_names_a_missing_subset():
    effect = {"a": 2.0, "b": -1.0, "c": 0.5, "d": 0.0}
    v = game(lambda s: sum(effect[z] for z in s))
    assert shapley(v, NAMES) == pytest.approx(effect)
    del v[frozenset({"a", "c"})]
    with pytest.raises(KeyError, match="a\\+c"):
        shapley(v, NAMES)


def test_lds_is_one_for_an_additive_game_and_a_method_that_returns_the_single_effects():
    effect = {"a": 2.0, "b": -1.0, "c": 0.5, "d": 0.25}
    v = game(lambda s: sum(effect[z] for z in s))
    assert group_lds(v, effect) == pytest.approx(1.0)
    assert additivity(v, NAMES) == pytest.approx(1.0)
    # Reversing the method's signs reverses every prediction: LDS −1.
    assert group_lds(v, {z: -x for z, x in effect.items()}) == pytest.approx(-1.0)


def test_additivity_drops_when_effects_interact():
    effect = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}
    # Redundant datasets: the model loses only what the best removed one taught it, so the sums overshoot.
    redundant = game(lambda s: max((effect[z] for z in s), default=0.0))
    assert additivity(game(lambda s: sum(effect[z] for z in s)), NAMES) == pytest.approx(1.0)
    assert additivity(redundant, NAMES) < 0
    assert math.isnan(additivity(game(lambda s: 1.0 if s else 0.0), NAMES))  # no spread: undefined


def test_lds_is_nan_when_undefined():
    v = game(lambda s: float(len(s)))
    assert math.isnan(group_lds(v, {z: 1.0 for z in NAMES} | {"a": math.nan}))
    assert math.isnan(group_lds({frozenset("a"): 1.0, frozenset("b"): 2.0}, {"a": 1.0, "b": 2.0}))


def test_top_k_removal_against_the_mean_of_every_k_subset():
    effect = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}
    v = game(lambda s: sum(effect[z] for z in s))
    picked, mean = top_k_removal(v, {"a": 9.0, "b": 8.0, "c": 0.0, "d": 0.0}, 2)
    assert picked == 7.0
    pairs = [effect[x] + effect[y] for x, y in itertools.combinations(NAMES, 2)]
    assert mean == pytest.approx(sum(pairs) / len(pairs))


def test_bank_floor_compares_seed_halves_over_the_subsets():
    import numpy as np
    import pandas as pd

    from untrac.subsets import bank_floor

    rng = np.random.default_rng(0)
    rows = []
    for s in every_subset(NAMES)[1:]:
        signal = float(len(s))
        for seed, noise in ((0, 0.0), (1000, 0.0), (1, 1.0)):
            rows.append({"run": 0, "seed": seed, "removed": "+".join(sorted(s)), "test_subset": "t",
                         "influence": signal + noise * rng.normal(scale=5.0)})
    frame = pd.DataFrame(rows)
    assert bank_floor(frame[frame.seed != 1]) == pytest.approx(1.0)  # two noiseless seeds agree exactly
    noisy = bank_floor(frame[frame.seed != 1000])
    assert noisy < 0.9
    assert math.isnan(bank_floor(frame[frame.seed == 0]))  # one seed: nothing to compare
