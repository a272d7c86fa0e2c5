"""HIF (paper Eq. 8): the Gauss–Newton operator, LiSSA and Arnoldi at the SHIPPED defaults, against
dense float64 linear algebra built independently (``explicit_ggn``: jacrev + the softmax Hessian)."""

from pathlib import Path

import datasets
import pytest
import torch
from methods_tiny import (explicit_ggn, explicit_hessian, example_grads, freeze, make_inputs, one_thread,  # noqa: F401
                          shipped, task, tiny)

from untrac.errors import UntracError
from untrac.methods import arnoldi, hessian, hif
from untrac.methods.grads import GradientSettings
from untrac.methods.hessian import PoolOperator, top_eigenvalue
from untrac.report import hif_solver_lines

CPU = torch.device("cpu")
# 24 trainable parameters (three decoder layer-norm scales): at most the shipped 25 Arnoldi steps
# span the whole space, and the GGN here has 24 distinct eigenvalues in [6e-4, 4.8].
SMALL = ("decoder.final_layer_norm.weight", "decoder.block.0.layer.2.layer_norm.weight",
         "decoder.block.0.layer.1.layer_norm.weight")


def random_symmetric(n: int, seed: int = 0, low: float = -1.0, high: float = 4.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q @ torch.diag(torch.linspace(low, high, n, dtype=torch.float64)) @ q.T


# -- the solvers on plain matrices -----------------------------------------------------------------
def test_lissa_recursion_solves_damped_system_and_reports_its_residual():
    a = random_symmetric(12)
    v = torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    system = a + 1.5 * torch.eye(12, dtype=torch.float64)  # spectrum in [0.5, 5.5] < s = 6
    x, history = hif.lissa_inverse_hvp(lambda y: a @ y, v, iterations=300, scale=6.0, damping=1.5)
    expected = torch.linalg.solve(system, v)
    assert ((x - expected).norm() / expected.norm()).item() < 1e-10
    assert len(history) == 301 and history[-1] == pytest.approx(((system @ x - v).norm() / v.norm()).item(), abs=1e-12)
    assert all(b <= a_ + 1e-15 for a_, b in zip(history, history[1:]))  # symmetric contraction: monotone


def test_lissa_authors_is_the_undamped_neumann_sum():
    a = random_symmetric(8, low=0.5, high=3.0)
    v = torch.randn(8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    step = torch.eye(8, dtype=torch.float64) - a / 4.0
    expected = sum(torch.linalg.matrix_power(step, k) @ v for k in range(6)) / 4.0
    torch.testing.assert_close(hif.lissa_authors(lambda y: a @ y, v, iterations=5, scale=4.0), expected)


def test_arnoldi_full_rank_recovers_spectrum_and_inverse():
    a = random_symmetric(10)  # indefinite: the authors' rule, top p by |λ|
    like = torch.zeros(1, dtype=torch.float64)
    eig = arnoldi.arnoldi_eigens(lambda x: a @ x, 10, 10, arnoldi.RitzSelection(topk=4, psd=False), seed=0, like=like)
    true = torch.linalg.eigvalsh(a)
    torch.testing.assert_close(eig.values, true[true.abs().argsort(descending=True)[:4]], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(eig.vectors.T @ eig.vectors, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-10)
    full = arnoldi.arnoldi_eigens(lambda x: a @ x, 10, 10, arnoldi.RitzSelection(topk=10, psd=False), seed=0, like=like)
    v = torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = torch.linalg.solve(a + 2.0 * torch.eye(10, dtype=torch.float64), v)
    got = arnoldi.arnoldi_inverse_hvp(full, v, damping=2.0)
    assert ((got - expected).norm() / expected.norm()).item() < 1e-10


def test_arnoldi_psd_rule_clips_round_off_and_keeps_the_largest():
    hess = torch.zeros(4, 3, dtype=torch.float64)
    hess[0, 0], hess[1, 1], hess[2, 2] = 5.0, -1e-12, 2.0  # a PSD operator's Ritz values, with round-off
    eig = arnoldi.distill(hess, torch.eye(3, dtype=torch.float64), arnoldi.RitzSelection(topk=3))
    assert eig.values.tolist() == [5.0, 2.0, 0.0]


def test_arnoldi_psd_rule_keeps_only_converged_ritz_pairs():
    """n < dim: the extremal Ritz pairs converge, the rest do not; only the converged ones are kept,
    and each kept pair's true residual ‖M u − θ u‖ is within RITZ_TOL·(θ + λ)."""
    spectrum = torch.cat([torch.tensor([100.0, 60.0, 30.0]), torch.logspace(-4, 0, 197)]).double()
    basis_q, _ = torch.linalg.qr(torch.randn(200, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    m = basis_q @ torch.diag(spectrum) @ basis_q.T
    like, damping = torch.zeros(1, dtype=torch.float64), 0.01
    eig = arnoldi.arnoldi_eigens(lambda x: m @ x, 200, 12, arnoldi.RitzSelection(topk=12, damping=damping), seed=0,
                                 like=like)
    assert 3 <= len(eig.values) < 12  # the unconverged bottom of the Krylov spectrum is dropped
    torch.testing.assert_close(eig.values[:3], spectrum[:3], rtol=1e-6, atol=0)
    u = eig.vectors
    residuals = (m @ u - u * eig.values).norm(dim=0)
    assert torch.all(residuals <= arnoldi.RITZ_TOL * (eig.values + damping) + 1e-9)
    everything = arnoldi.distill(*arnoldi.arnoldi_iteration(lambda x: m @ x, arnoldi.random_start(200, 0, like), 12),
                                 arnoldi.RitzSelection(topk=12, psd=True, damping=float("inf")))
    # an infinite tolerance keeps all 12
    assert len(everything.values) == 12


def test_arnoldi_stops_when_krylov_space_is_invariant():
    a = torch.diag(torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0], dtype=torch.float64))  # 3 distinct eigenvalues
    hess, basis = arnoldi.arnoldi_iteration(lambda x: a @ x, torch.ones(5, dtype=torch.float64), iterations=5)
    assert hess.shape == (4, 3) and basis.shape == (3, 5)


# -- a tiny float64 T5 with 24 trainable parameters --------------------------------------------------
@pytest.fixture(scope="module")
def problem():
    model, arch, tok = tiny("seq2seq")
    freeze(model, SMALL)
    train, test = task(tok, arch, n=3)
    pool = datasets.concatenate_datasets([train["dataset1"], train["dataset3"]])
    return model, arch, train, test, pool, explicit_ggn(model, pool, arch)


def gradients(model, arch, train, test):
    """ĝ_Z (per-example normalised, the shipped ``normalize_train``) and ḡ_Z', by plain autograd."""
    unit = {}
    for z, ds in train.items():
        rows = example_grads(model, ds, arch)
        unit[z] = (rows / rows.norm(dim=1, keepdim=True)).mean(0)
    return unit, {s: example_grads(model, t, arch).mean(0) for s, t in test.items()}


def explicit_scores(model, arch, train, test, solve):
    unit, tests = gradients(model, arch, train, test)
    return {(z, s): torch.dot(g, solve(v)).item() for z, g in unit.items() for s, v in tests.items()}


def max_relative_error(frame, expected):
    got = {(r.train_dataset, r.test_subset): r.influence for r in frame.itertuples()}
    assert got.keys() == expected.keys()
    return max(abs(got[k] - expected[k]) / abs(expected[k]) for k in expected)


def test_ggn_operator_matches_explicit_matrix(problem):
    model, arch, _, _, pool, g = problem
    eye = torch.eye(len(g), dtype=torch.float64)
    op = PoolOperator(model, pool, GradientSettings(arch, CPU, 4))  # two chunks of the 6-example pool
    built = torch.stack([op(e) for e in eye], dim=1)
    # T5's layer norm takes its variance in float32, so float64 agreement stops near 1e-8.
    assert ((built - g).norm() / g.norm()).item() < 1e-6
    assert torch.linalg.eigvalsh(g).min() > -1e-10  # PSD, unlike the exact Hessian below
    h = explicit_hessian(model, pool, arch)
    assert torch.linalg.eigvalsh(0.5 * (h + h.T)).min() < -0.1
    exact = PoolOperator(model, pool, GradientSettings(arch, CPU, 4), kind="hessian")
    assert ((torch.stack([exact(e) for e in eye], dim=1) - h).norm() / h.norm()).item() < 1e-6


def test_kept_graphs_give_the_recomputed_products_bit_for_bit(problem, monkeypatch):
    model, arch, _, _, pool, g = problem
    vectors = torch.randn(3, len(g), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    recomputed = PoolOperator(model, pool, GradientSettings(arch, CPU, 4), keep_graphs=False)
    auto = PoolOperator(model, pool, GradientSettings(arch, CPU, 4))
    for v in vectors:  # the second and third products reuse the graphs the first one kept
        assert torch.equal(auto(v), recomputed(v))
    assert auto.keep_graphs is True and len(auto.graphs) == 2 and not recomputed.graphs
    monkeypatch.setattr(hessian, "free_memory", lambda device: 0)  # nowhere to keep them: recompute
    starved = PoolOperator(model, pool, GradientSettings(arch, CPU, 4))
    assert torch.equal(starved(vectors[0]), recomputed(vectors[0])) and starved.keep_graphs is False
    assert not starved.graphs


def test_graph_bytes_counts_each_saved_storage_once_and_not_the_parameters():
    w, a = torch.randn(1000, requires_grad=True), torch.randn(1000)

    def build():
        y = w * w * a  # w * w saves w twice (one storage); (w * w) * a saves a
        z = y.sin()  # saves y
        return z * z  # saves z twice: one storage

    out, size = hessian.graph_bytes(build, [w])
    assert size == 3 * 1000 * 4  # a, y, z in float32, counted by hand; w is shared, not held
    assert hessian.graph_bytes(build, [])[1] == 4 * 1000 * 4  # w too, once
    out.sum().backward()  # the graph is intact
    y = w.detach() ** 2 * a
    assert torch.allclose(w.grad, 2 * y.sin() * y.cos() * 2 * w.detach() * a)


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="MemAvailable is a Linux /proc/meminfo field")
def test_free_host_memory_counts_the_reclaimable_page_cache():
    free = hessian.free_memory(torch.device("cpu"))
    lines = Path("/proc/meminfo").read_text().splitlines()
    meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in lines}
    # the kernel's estimate of what can be had without swapping (free pages + reclaimable cache), in
    # bytes; read twice, so equal up to what other processes did in between
    headroom = hessian.cgroup_headroom()
    expected = meminfo["MemAvailable"] if headroom is None else min(meminfo["MemAvailable"], headroom)
    assert 0 <= free <= meminfo["MemTotal"]
    assert abs(free - expected) < 256 * 2**20


@pytest.mark.parametrize("membership, files, expected", [
    ("0::/job.slice/step\n", {"job.slice/step/memory.max": "4000\n", "job.slice/step/memory.current": "1000\n"}, 3000),
    ("0::/job\n", {"job/memory.max": "max\n", "job/memory.current": "1000\n"}, None),
    ("12:cpu:/x\n4:memory:/slurm/job1\n0::/\n",
     {"memory/slurm/job1/memory.limit_in_bytes": "5000\n", "memory/slurm/job1/memory.usage_in_bytes": "7000\n"}, 0),
    ("4:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
                      "memory/memory.usage_in_bytes": "9\n"}, None),
])
def test_cgroup_headroom_reads_the_limit_of_the_process_cgroup(tmp_path, membership, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "self_cgroup").write_text(membership)
    assert hessian.cgroup_headroom(tmp_path, tmp_path / "self_cgroup") == expected
    assert hessian.cgroup_headroom(tmp_path, tmp_path / "missing") is None


def test_lanczos_finds_the_top_eigenvalue(problem):
    model, arch, _, _, pool, g = problem
    op = PoolOperator(model, pool, GradientSettings(arch, CPU, 16))
    start = torch.randn(len(g), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    value, _ = top_eigenvalue(op, start, iterations=shipped("hif_lissa")["lanczos_iterations"])
    assert value == pytest.approx(torch.linalg.eigvalsh(g).max().item(), rel=1e-3)


def test_lissa_at_shipped_defaults_is_the_explicit_truncated_series(problem):
    model, arch, train, test, pool, g = problem
    cfg = shipped("hif_lissa")
    assert cfg["lissa_scale"] == "auto" and cfg["variant"] == "default"
    inputs = make_inputs(model, arch, train, test, pool=pool, **cfg)
    frame = hif.score_lissa(inputs)
    rec = inputs.counters["hif_solver"][0]
    lam, k = cfg["damping"], cfg["lissa_iterations"]
    top = torch.linalg.eigvalsh(g).max().item()
    assert rec["lambda_max"] == pytest.approx(top, rel=1e-3)
    assert rec["scale"] == pytest.approx(1.1 * (rec["lambda_max"] + lam))
    system = g + lam * torch.eye(len(g), dtype=torch.float64)
    step = torch.eye(len(g), dtype=torch.float64) - system / rec["scale"]

    def truncated(v):  # (1/s) Σ_{k=0}^{K} (I − (G + λI)/s)^k v, dense
        return sum(torch.linalg.matrix_power(step, i) @ v for i in range(k + 1)) / rec["scale"]

    assert max_relative_error(frame, explicit_scores(model, arch, train, test, truncated)) < 1e-5
    _, tests = gradients(model, arch, train, test)
    for s, v in tests.items():  # the recorded residual is the true one of the returned x
        x = truncated(v)
        assert rec["residual"][s] == pytest.approx(((system @ x - v).norm() / v.norm()).item(), rel=1e-4)
    # 10 steps at κ ≈ 450 do not converge; the run says so instead of passing the series off as the inverse.
    assert rec["status"] == "truncated" and 1e-3 < max(rec["residual"].values()) < 1


def test_lissa_converges_to_explicit_inverse_with_enough_iterations(problem):
    model, arch, train, test, pool, g = problem
    values = torch.linalg.eigvalsh(g)
    damping = 0.25 * values.max().item()  # condition number ≤ 5: quick convergence
    rate = 1 - (values.min().item() + damping) / (1.1 * (values.max().item() + damping))
    iterations = int(torch.tensor(1e-7).log() / torch.tensor(rate).log()) + 1
    inputs = make_inputs(model, arch, train, test, pool=pool, **shipped("hif_lissa", damping=damping,
                                                                           lissa_iterations=iterations))
    frame = hif.score_lissa(inputs)
    system = g + damping * torch.eye(len(g), dtype=torch.float64)
    expected = explicit_scores(model, arch, train, test, lambda v: torch.linalg.solve(system, v))
    assert max_relative_error(frame, expected) < 1e-5
    assert inputs.counters["hif_solver"][0]["status"] == "converged"


def test_arnoldi_at_shipped_defaults_matches_explicit_inverse(problem):
    model, arch, train, test, pool, g = problem
    cfg = shipped("hif_arnoldi")
    assert cfg["arnoldi_iterations"] >= len(g)  # the shipped 25 steps span this 24-dim space
    inputs = make_inputs(model, arch, train, test, pool=pool, **cfg)
    frame = hif.score_arnoldi(inputs)
    system = g + cfg["damping"] * torch.eye(len(g), dtype=torch.float64)
    expected = explicit_scores(model, arch, train, test, lambda v: torch.linalg.solve(system, v))
    assert max_relative_error(frame, expected) < 1e-4
    rec = inputs.counters["hif_solver"][0]
    assert rec["status"] == "converged" and rec["min_denominator"] >= cfg["damping"]
    torch.testing.assert_close(torch.tensor(sorted(rec["eigenvalues"])), torch.linalg.eigvalsh(g).float(),
                               rtol=1e-4, atol=1e-5)


def test_diverging_lissa_is_flagged_not_silently_reported(problem):
    model, arch, train, test, pool, g = problem
    top = torch.linalg.eigvalsh(g).max().item()
    # s below (λ_max + λ)/2: the top direction is multiplied by |1 − (λ_max + λ)/s| > 1 every step.
    inputs = make_inputs(model, arch, train, test, pool=pool, **shipped("hif_lissa", lissa_scale=0.3 * top,
                                                                           lissa_iterations=30))
    hif.score_lissa(inputs)
    rec = inputs.counters["hif_solver"][0]
    assert rec["status"] == "diverged" and max(rec["residual"].values()) > 1
    text = "\n".join(hif_solver_lines(inputs.counters["hif_solver"]))
    assert "diverged" in text and "do not trust" in text


def test_authors_lissa_is_the_undamped_exact_hessian_recursion(problem):
    model, arch, train, test, pool, _ = problem
    h = explicit_hessian(model, pool, arch)
    h = 0.5 * (h + h.T)
    # hessian_batch_size ≥ pool: every "fresh" batch is the whole pool, so H_k = H and a dense check works.
    inputs = make_inputs(model, arch, train, test, pool=pool, **shipped("hif_lissa", variant="authors",
                                                                           lissa_scale=20.0, hessian_batch_size=64))
    frame = hif.score_lissa(inputs)
    step = torch.eye(len(h), dtype=torch.float64) - h / 20.0
    expected = explicit_scores(model, arch, train, test,
                               lambda v: sum(torch.linalg.matrix_power(step, k) @ v for k in range(11)) / 20.0)
    assert max_relative_error(frame, expected) < 1e-5
    rec = inputs.counters["hif_solver"][0]
    assert rec["operator"] == "hessian" and rec["damping"] == 0.0


def test_authors_arnoldi_uses_a_fresh_batch_per_hvp(problem):
    model, arch, train, test, pool, _ = problem
    inputs = make_inputs(model, arch, train, test, pool=pool, **shipped("hif_arnoldi", variant="authors",
                                                                           arnoldi_iterations=4, arnoldi_topk=2,
                                                                           hessian_batch_size=2))
    frame = hif.score_arnoldi(inputs)
    # 4 Arnoldi HVPs on 2 fresh examples each, then one whole-pool residual check per test subset.
    assert inputs.counters["hvp_examples"] == 4 * 2 + len(test) * len(pool)
    assert inputs.counters["hif_solver"][0]["kept"] == 2
    assert frame.influence.notna().all() and len(frame) == len(train) * len(test)


@pytest.mark.parametrize("score", [hif.score_lissa, hif.score_arnoldi])
def test_hif_needs_a_hessian_pool(problem, score):
    model, arch, train, test, *_ = problem
    with pytest.raises(UntracError, match="Hessian pool"):
        score(make_inputs(model, arch, train, test, name="hif_lissa"))


def test_bad_hif_settings_name_the_key():
    with pytest.raises(UntracError, match="method.variant"):
        make_inputs(None, None, {}, {}, name="hif_lissa", variant="summed")
    with pytest.raises(UntracError, match="method.lissa_scale"):
        make_inputs(None, None, {}, {}, name="hif_lissa", lissa_scale="big")
    with pytest.raises(UntracError, match="method.damping"):
        make_inputs(None, None, {}, {}, name="hif_arnoldi", damping=0.0)


def test_arnoldi_without_a_converged_ritz_pair_is_one_line(problem, monkeypatch):
    """Too few iterations for any pair to converge: a clear error, not an empty reduction."""
    import untrac.methods.hif as hif_module

    empty = arnoldi.Eigens(values=torch.zeros(0, dtype=torch.float64), coords=torch.zeros(2, 0, dtype=torch.float64),
                       basis=torch.zeros(2, 3, dtype=torch.float64))
    monkeypatch.setattr(hif_module, "arnoldi_eigens", lambda *a, **k: empty)
    model, arch, train, test, pool, _ = problem
    with pytest.raises(UntracError, match="no Ritz pair converged"):
        hif.score_arnoldi(make_inputs(model, arch, train, test, name="hif_arnoldi", pool=pool))
