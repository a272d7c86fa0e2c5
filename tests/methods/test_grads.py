"""untrac.methods.grads: set gradients, per-example gradients (vmap vs loop), HVPs, Hessian batches."""

import pytest
import torch
from methods_tiny import assert_rel, example_grads, explicit_hessian, freeze, one_thread, task, tiny  # noqa: F401

from untrac.data.collate import collate
from untrac.methods import grads


@pytest.fixture(scope="module")
def t5_setup():
    model, arch, tok = tiny("seq2seq")
    freeze(model)
    train, test = task(tok, arch)
    return model, arch, train, test


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_per_example_vmap_equals_autograd_loop(kind):
    """The vectorised path (torch.func) gives each example's own gradient, for T5 and OPT alike."""
    model, arch, tok = tiny(kind)
    train, _ = task(tok, arch, n=4)
    ds = train["dataset3"]  # different lengths → padding inside the batch
    batch = collate(ds[list(range(len(ds)))], arch.pad_id)
    params = grads.trainable(model)
    vectorised = grads._per_example_vmap(model, batch, arch, params)  # no fallback: must work as is
    reference = example_grads(model, ds, arch)
    assert vectorised.shape == (len(ds), sum(p.numel() for p in params))
    assert_rel(vectorised, reference, 1e-6)
    assert_rel(grads._per_example_loop(model, batch, arch, params), reference, 1e-6)
    assert model.config._attn_implementation == "sdpa"  # eager attention was only borrowed


def test_mean_gradient_is_batch_independent_mean(t5_setup):
    model, arch, train, _ = t5_setup
    ds = train["dataset1"]
    counters = {}
    g2 = grads.mean_gradient(model, ds, grads.GradientSettings(arch, torch.device("cpu"), 2), counters=counters)
    g5 = grads.mean_gradient(model, ds, grads.GradientSettings(arch, torch.device("cpu"), 5))
    reference = example_grads(model, ds, arch).mean(0)
    assert_rel(g2, reference, 1e-6)
    assert_rel(g5, reference, 1e-6)
    assert counters == {"forward_backward": 3, "grad_examples": len(ds)}  # ceil(5 / 2) batches


def test_mean_unit_gradient(t5_setup):
    model, arch, train, _ = t5_setup
    ds = train["dataset2"]
    rows = example_grads(model, ds, arch)
    expected = (rows / rows.norm(dim=1, keepdim=True)).mean(0)
    got = grads.mean_unit_gradient(model, ds, grads.GradientSettings(arch, torch.device("cpu"), 2))
    assert_rel(got, expected, 1e-6)


def test_trainable_respects_requires_grad(t5_setup):
    model, *_ = t5_setup
    assert sum(p.numel() for p in grads.trainable(model)) == 8 * 8 + 8 * 8 + 8


def test_hvp_matches_explicit_hessian(t5_setup):
    model, arch, train, _ = t5_setup
    ds = train["dataset4"]
    hessian = explicit_hessian(model, ds, arch)
    assert_rel(hessian.flatten(), hessian.T.flatten(), 1e-6)
    v = torch.randn(hessian.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    counters = {}
    batch = collate(ds[list(range(len(ds)))], arch.pad_id)
    got = grads.hvp(model, batch, arch, v, counters=counters)
    assert_rel(got, hessian @ v, 1e-6)
    assert counters == {"hvp": 1, "hvp_examples": len(ds)}


def test_hessian_batches_whole_pool_and_fresh(t5_setup):
    _, arch, train, _ = t5_setup
    pool = train["dataset1"]
    whole = grads.HessianBatches(pool, 100, arch, torch.device("cpu"), seed=0)
    for _ in range(3):
        assert len(whole()["input_ids"]) == len(pool)
    fresh = grads.HessianBatches(pool, 2, arch, torch.device("cpu"), seed=0)
    seen = [tuple(map(tuple, fresh()["input_ids"].tolist())) for _ in range(2)]
    assert seen[0] != seen[1]  # consecutive HVPs see different examples


def test_flatten_roundtrip(t5_setup):
    model, *_ = t5_setup
    params = grads.trainable(model)
    flat = grads.flatten([p.detach() for p in params], params)
    for a, b in zip(grads.unflatten(flat, params), params):
        assert torch.equal(a, b)
    assert torch.equal(grads.flatten([None] * len(params), params), torch.zeros_like(flat))
