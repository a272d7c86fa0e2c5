"""HIF (paper Eq. 8): LiSSA and Arnoldi against an explicit (H + λI)⁻¹ on a tiny float64 model."""

import datasets
import pytest
import torch
from methods_tiny import example_grads, explicit_hessian, freeze, make_inputs, one_thread, task, tiny  # noqa: F401

from untrac.errors import UntracError
from untrac.methods import hif


def random_symmetric(n: int, seed: int = 0) -> torch.Tensor:
    """A symmetric matrix with eigenvalues spread over [-1, 4], some negative (indefinite)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q @ torch.diag(torch.linspace(-1.0, 4.0, n, dtype=torch.float64)) @ q.T


def test_lissa_recursion_solves_damped_system():
    a = random_symmetric(12)
    v = torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    damping, scale = 1.5, 6.0  # spectrum of A + λI in [0.5, 5.5] < s: a contraction
    got = hif.lissa_inverse_hvp(lambda x: a @ x, v, iterations=300, scale=scale, damping=damping)
    expected = torch.linalg.solve(a + damping * torch.eye(12, dtype=torch.float64), v)
    assert ((got - expected).norm() / expected.norm()).item() < 1e-10


def test_arnoldi_full_rank_recovers_spectrum_and_inverse():
    a = random_symmetric(10)
    like = torch.zeros(1, dtype=torch.float64)
    eig = hif.arnoldi_eigens(lambda x: a @ x, 10, iterations=10, topk=4, seed=0, like=like)
    true = torch.linalg.eigvalsh(a)
    top = true[true.abs().argsort(descending=True)[:4]]
    torch.testing.assert_close(eig.values, top, rtol=1e-10, atol=1e-10)  # top p by |λ|
    torch.testing.assert_close(eig.vectors.T @ eig.vectors, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-10)
    full = hif.arnoldi_eigens(lambda x: a @ x, 10, iterations=10, topk=10, seed=0, like=like)
    v = torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = torch.linalg.solve(a + 2.0 * torch.eye(10, dtype=torch.float64), v)
    got = hif.arnoldi_inverse_hvp(full, v, damping=2.0)
    assert ((got - expected).norm() / expected.norm()).item() < 1e-10


def test_arnoldi_stops_when_krylov_space_is_invariant():
    a = torch.diag(torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0], dtype=torch.float64))  # 3 distinct eigenvalues
    hess, basis = hif.arnoldi_iteration(lambda x: a @ x, torch.ones(5, dtype=torch.float64), iterations=5)
    assert hess.shape == (4, 3) and basis.shape == (3, 5)


# -- the full methods on a tiny T5 with 144 trainable parameters -----------------------------------
@pytest.fixture(scope="module")
def problem():
    model, arch, tok = tiny("seq2seq")
    freeze(model)
    train, test = task(tok, arch, n=3)
    pool = datasets.concatenate_datasets([train["dataset1"], train["dataset3"]])
    h = explicit_hessian(model, pool, arch)
    h = 0.5 * (h + h.T)
    values = torch.linalg.eigvalsh(h)
    # Damping that makes H + λI positive definite with condition number ≤ 5 (LiSSA converges fast).
    damping = max(0.0, -values.min().item()) + 0.25 * (values.max() - values.min()).item()
    return model, arch, train, test, pool, h, values, damping


def explicit_hif(model, arch, train, test, h, damping, normalize=True):
    """Eq. 8 by dense linear algebra: ĝ_Zᵀ (H + λI)⁻¹ ḡ_Z' with plain-autograd per-example gradients."""
    system = h + damping * torch.eye(len(h), dtype=h.dtype)
    out = {}
    for z, ds in train.items():
        rows = example_grads(model, ds, arch)
        g = (rows / rows.norm(dim=1, keepdim=True)).mean(0) if normalize else rows.mean(0)
        for s, t in test.items():
            out[(z, s)] = torch.dot(g, torch.linalg.solve(system, example_grads(model, t, arch).mean(0))).item()
    return out


def max_relative_error(frame, expected):
    got = {(r.train_dataset, r.test_subset): r.influence for r in frame.itertuples()}
    assert got.keys() == expected.keys()
    return max(abs(got[k] - expected[k]) / abs(expected[k]) for k in expected)


@pytest.mark.parametrize("normalize", [True, False])
def test_arnoldi_full_rank_matches_explicit_inverse(problem, normalize):
    model, arch, train, test, pool, h, _, damping = problem
    p = len(h)
    inputs = make_inputs(model, arch, train, test, pool=pool, name="hif_arnoldi", arnoldi_iterations=p,
                         arnoldi_topk=p, damping=damping, hessian_batch_size=len(pool), normalize_train=normalize)
    frame = hif.score_arnoldi(inputs)  # every HVP on the whole pool: the exact Hessian
    assert max_relative_error(frame, explicit_hif(model, arch, train, test, h, damping, normalize)) < 1e-4
    assert inputs.counters["hvp"] <= p and inputs.counters["hvp_examples"] == inputs.counters["hvp"] * len(pool)


def test_lissa_converged_matches_explicit_inverse(problem):
    model, arch, train, test, pool, h, values, damping = problem
    scale = 1.05 * (values.max().item() + damping)
    rate = 1 - (values.min().item() + damping) / scale  # contraction factor of the recursion
    iterations = int(torch.tensor(1e-6).log() / torch.tensor(rate).log()) + 1
    assert iterations < 150, "test problem too ill-conditioned to be quick"
    inputs = make_inputs(model, arch, train, test, pool=pool, name="hif_lissa", lissa_iterations=iterations,
                         lissa_scale=scale, damping=damping, hessian_batch_size=len(pool))
    frame = hif.score_lissa(inputs)
    assert max_relative_error(frame, explicit_hif(model, arch, train, test, h, damping)) < 1e-3
    # One solve per test subset (not per pair): iterations HVPs for each of the two subsets.
    assert inputs.counters["hvp"] == iterations * len(test)


def test_arnoldi_uses_a_fresh_batch_per_hvp(problem):
    model, arch, train, test, pool, *_ = problem
    inputs = make_inputs(model, arch, train, test, pool=pool, name="hif_arnoldi", arnoldi_iterations=4,
                         arnoldi_topk=2, hessian_batch_size=2)
    frame = hif.score_arnoldi(inputs)
    assert inputs.counters["hvp"] == 4 and inputs.counters["hvp_examples"] == 8
    assert len(inputs.counters["arnoldi_eigenvalues"]) == 2
    assert frame.influence.notna().all() and len(frame) == len(train) * len(test)


@pytest.mark.parametrize("score", [hif.score_lissa, hif.score_arnoldi])
def test_hif_needs_a_hessian_pool(problem, score):
    model, arch, train, test, *_ = problem
    with pytest.raises(UntracError, match="Hessian pool"):
        score(make_inputs(model, arch, train, test, name="hif_lissa"))
