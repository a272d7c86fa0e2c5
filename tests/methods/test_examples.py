"""Per-example scores behind ``rank.top_k`` (examples.csv): each averages to its set-level score.

GradDot: g_iᵀ ḡ' per training example, whose mean over the dataset is the set GradDot ḡᵀḡ';
GradCos: (g_i/‖g_i‖)ᵀ(mean unit test gradient), whose mean is the set GradCos; UnTrac-Inv: the
loss change of each scored training example after unlearning the test subset (Eq. 4 per example),
whose mean is the dataset's influence (a set's loss is its examples' mean). All in float64.
"""

import dataclasses

import numpy as np
import pytest
import torch
from methods_tiny import example_grads, freeze, make_inputs, one_thread, task, tiny  # noqa: F401

from untrac.config import UnlearnConfig
from untrac.losses import per_example_losses
from untrac.methods import gradsim
from untrac.methods.untrac import score_untrac_inv
from untrac.pipeline import top_examples


@pytest.fixture(scope="module")
def setup():
    model, arch, tok = tiny("seq2seq")
    freeze(model)
    train, test = task(tok, arch, n=4)
    return model, arch, train, test


def set_scores(frame):
    return {(r.train_dataset, r.test_subset): r.influence for r in frame[frame.is_final].itertuples()}


def example_means(examples):
    return examples.groupby(["train_dataset", "test_subset"]).score.mean().to_dict()


@pytest.mark.parametrize("name", ["graddot", "gradcos"])
def test_gradient_example_scores_average_to_the_set_score(setup, name):
    model, arch, train, test = setup
    inputs = dataclasses.replace(make_inputs(model, arch, train, test, name=name, per_example_batch=3), examples=[])
    sets = set_scores(getattr(gradsim, f"score_{name}")(inputs))
    (examples,) = inputs.examples
    assert list(examples.columns) == ["train_dataset", "example", "test_subset", "score"]
    assert len(examples) == sum(len(ds) for ds in train.values()) * len(test)
    means = example_means(examples)
    for key, value in sets.items():
        assert means[key] == pytest.approx(value, rel=1e-10, abs=1e-14)


def test_graddot_example_score_is_the_dot_with_the_mean_test_gradient(setup):
    """Independent check of one dataset's rows: brute-force per-example gradients by plain autograd."""
    model, arch, train, test = setup
    inputs = dataclasses.replace(make_inputs(model, arch, train, test, name="graddot", per_example_batch=3), examples=[])
    gradsim.score_graddot(inputs)
    frame = inputs.examples[0]
    z, s = next(iter(train)), next(iter(test))
    expected = example_grads(model, train[z], arch) @ example_grads(model, test[s], arch).mean(dim=0)
    got = frame[(frame.train_dataset == z) & (frame.test_subset == s)].sort_values("example").score.to_numpy()
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-10, atol=1e-14)


def test_no_example_work_unless_asked(setup):
    model, arch, train, test = setup
    inputs = make_inputs(model, arch, train, test, name="graddot", per_example_batch=3)
    gradsim.score_graddot(inputs)
    assert inputs.examples is None and inputs.counters["forward_backward"] == 2 * (len(train) + len(test))


def test_untrac_inv_example_changes_average_to_the_influence(setup):
    model, arch, train, test = setup
    inputs = dataclasses.replace(make_inputs(model, arch, train, test, name="untrac_inv"), examples=[],
                                 unlearn=UnlearnConfig(batch_size=256, epochs=2, eval_every=1, workers="1"))
    sets = set_scores(score_untrac_inv(inputs))
    (examples,) = inputs.examples
    means = example_means(examples)
    assert max(abs(v) for v in sets.values()) > 0  # the ascent moved the losses
    for key, value in sets.items():
        assert means[key] == pytest.approx(value, rel=1e-10, abs=1e-14)
    # one change per scored training example and test subset
    z = next(iter(train))
    before = per_example_losses(model, train[z], arch, torch.device("cpu"))
    assert len(examples[(examples.train_dataset == z)]) == len(before) * len(test)


def test_top_examples_keeps_the_highest_per_subset():
    import pandas as pd

    scores = pd.DataFrame({"method": "m", "run": 0, "train_dataset": ["a", "a", "b", "b"], "example": [0, 1, 0, 1],
                           "test_subset": ["s", "s", "s", "t"], "score": [0.1, -2.0, 0.5, 3.0]})
    top = top_examples(scores, 2)
    assert top[top.test_subset == "s"][["train_dataset", "example"]].values.tolist() == [["b", 0], ["a", 0]]
    assert top[top.test_subset == "t"].score.tolist() == [3.0]
