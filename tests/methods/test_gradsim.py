"""GradDot, GradCos, TracIn (paper §4.1, Eq. 7) against brute-force sums over example pairs.

(GradDot = TracIn at θ0 with η = 1 is in test_identities.py with the other §4.3 identities.)
"""

import copy

import pytest
import torch
from methods_tiny import example_grads, freeze, make_inputs, one_thread, task, tiny  # noqa: F401

from untrac.errors import UntracError
from untrac.methods import COLUMNS, Checkpoint, gradsim


@pytest.fixture(scope="module", params=["seq2seq", "causal"])
def setup(request):
    model, arch, tok = tiny(request.param)
    if request.param == "seq2seq":
        freeze(model)
    else:  # OPT: the last layer's MLP output and the final norm
        freeze(model, keep=("model.decoder.layers.0.fc2.weight", "model.decoder.final_layer_norm.weight"))
    train, test = task(tok, arch, n=4)
    per_example = {("train", z): example_grads(model, ds, arch) for z, ds in train.items()}
    per_example.update({("test", s): example_grads(model, ds, arch) for s, ds in test.items()})
    return model, arch, train, test, per_example


def as_dict(frame):
    assert list(frame.columns) == COLUMNS and frame.is_final.all() and (frame.step == 0).all()
    return {(r.train_dataset, r.test_subset): r.influence for r in frame.itertuples()}


def brute_force(per_example, train, test, pair):
    """(1/(N N')) Σ_i Σ_j pair(g_i, g'_j): the dataset-level definition, one example pair at a time."""
    out = {}
    for z in train:
        for s in test:
            rows, cols = per_example[("train", z)], per_example[("test", s)]
            total = sum(pair(g, h) for g in rows for h in cols)
            out[(z, s)] = (total / (len(rows) * len(cols))).item()
    return out


def assert_scores_close(got, expected, rtol=1e-6):
    assert got.keys() == expected.keys()
    scale = max(abs(v) for v in expected.values())
    for key in expected:
        assert abs(got[key] - expected[key]) <= rtol * scale, (key, got[key], expected[key])


def test_graddot_equals_double_sum_over_pairs(setup):
    model, arch, train, test, per_example = setup
    inputs = make_inputs(model, arch, train, test, name="graddot", per_example_batch=3)
    got = as_dict(gradsim.score_graddot(inputs))
    assert_scores_close(got, brute_force(per_example, train, test, torch.dot))
    # One accumulated gradient per set: ceil(4/3) = 2 batches for each of 4 + 2 sets, no per-pair work.
    assert inputs.counters["forward_backward"] == 2 * (len(train) + len(test))
    assert inputs.counters["grad_examples"] == 4 * (len(train) + len(test))


def test_gradcos_equals_mean_pairwise_cosine(setup):
    model, arch, train, test, per_example = setup
    cos = lambda g, h: torch.nn.functional.cosine_similarity(g, h, dim=0)  # noqa: E731
    got = as_dict(gradsim.score_gradcos(make_inputs(model, arch, train, test, name="gradcos")))
    assert_scores_close(got, brute_force(per_example, train, test, cos))
    assert all(-1 <= v <= 1 for v in got.values())


def test_gradcos_summed_is_cosine_of_set_gradients(setup):
    model, arch, train, test, per_example = setup
    got = as_dict(gradsim.score_gradcos(make_inputs(model, arch, train, test, name="gradcos", variant="summed")))
    expected = {(z, s): torch.nn.functional.cosine_similarity(per_example[("train", z)].mean(0),
                                                              per_example[("test", s)].mean(0), dim=0).item()
                for z in train for s in test}
    assert_scores_close(got, expected)


def test_gradcos_rejects_unknown_variant(setup):
    model, arch, train, test, _ = setup
    with pytest.raises(UntracError, match="variant"):
        gradsim.score_gradcos(make_inputs(model, arch, train, test, name="gradcos", variant="bogus"))


def test_tracin_sums_lr_weighted_checkpoints(setup):
    """Eq. 7: Σ_t η_t GradDot(θ_t), each checkpoint loaded into a copy of θ0's model."""
    model, arch, train, test, _ = setup
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
    states = [copy.deepcopy(model.state_dict()), copy.deepcopy(other.state_dict())]
    ckpts = [Checkpoint(10, 0.5, lambda m: m.load_state_dict(states[0])),
             Checkpoint(20, 2.0, lambda m: m.load_state_dict(states[1]))]
    inputs = make_inputs(model, arch, train, test, name="tracin", checkpoints=ckpts)
    got = as_dict(gradsim.score_tracin(inputs))
    assert inputs.counters["tracin_checkpoints"] == 2
    at_a = as_dict(gradsim.score_graddot(make_inputs(model, arch, train, test)))
    at_b = as_dict(gradsim.score_graddot(make_inputs(other, arch, train, test)))
    assert_scores_close(got, {k: 0.5 * at_a[k] + 2.0 * at_b[k] for k in at_a}, rtol=1e-10)
    for name, p in model.state_dict().items():  # θ0 itself is never modified
        assert torch.equal(p, states[0][name])


def test_tracin_without_checkpoints_is_an_error(setup):
    model, arch, train, test, _ = setup
    with pytest.raises(UntracError, match="checkpoints"):
        gradsim.score_tracin(make_inputs(model, arch, train, test, name="tracin"))
