from collections import Counter

from untrac.train import sample_order, steps_for


def test_sample_order_covers_each_epoch_once_and_is_seeded():
    batches = list(sample_order(pool_size=10, steps=5, batch_size=4, seed=3))
    flat = [i for b in batches for i in b]
    assert all(len(b) == 4 for b in batches)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert batches == list(sample_order(10, 5, 4, seed=3))
    assert batches != list(sample_order(10, 5, 4, seed=4))


def test_same_seed_same_draws_whatever_the_pool():
    # θ0 and θ−Z share the random stream: with equal pool sizes they index identically.
    assert list(sample_order(8, 3, 2, 0)) == list(sample_order(8, 3, 2, 0))
    counts = Counter(i for b in sample_order(6, 6, 1, 0) for i in b)
    assert set(counts.values()) == {1}


def test_steps_for_modes():
    assert steps_for(1000, 8, fixed_steps=200, epochs=1, mode="fixed_steps") == 200
    assert steps_for(1000, 8, fixed_steps=200, epochs=2, mode="all_examples") == 250
