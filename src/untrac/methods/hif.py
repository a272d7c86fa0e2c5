"""Hessian-based influence functions (paper §4.2, Eq. 8) with LiSSA or Arnoldi for the inverse.

Target (``method.variant=default``, DESIGN §2 "HIF must have a well-posed target"):

    HIF(Z', Z) = ĝ_Zᵀ (G + λI)⁻¹ ḡ_Z',

ĝ_Z the mean training gradient of Z (per-example normalised when ``method.normalize_train``, paper
§5), ḡ_Z' the mean test gradient, λ = ``method.damping`` > 0, and G the Gauss–Newton matrix of the
mean loss over ONE fixed pool of ``hessian_examples`` training examples (``hessian.PoolOperator``).
G is positive semi-definite by construction, so G + λI is positive definite and its inverse
exists; the exact Hessian is indefinite at a small model's θ0 (eigenvalues ≈ −8 measured on the
default tiny T5), where (H + λI)⁻¹ is not an influence operator. LiSSA and Arnoldi iterate the
same G (every product is the mean over the whole pool, in fixed chunks).

- LiSSA: a damped Neumann recursion with scale s above λ_max(G) + λ — ``lissa_scale: auto`` sets
  s = 1.1·(λ̂_max + λ) from Lanczos — so it contracts by construction. With few
  iterations it is a truncated series; the relative residual ‖(G + λI)x − v‖/‖v‖ is recorded.
- Arnoldi (Schioppa et al. 2022, "Scaling up influence functions", §3): the top-p Ritz pairs of G
  by magnitude, among the converged ones (Ritz residual ≤ 0.1·(λ_k + λ), ``RITZ_TOL``). G is PSD,
  so its Ritz values are ≥ 0 (tiny negative round-off is clipped to 0) and every kept denominator
  λ_k + λ ≥ λ > 0: no division by a near-zero, and no weight on an unconverged direction.

``method.variant=authors`` reproduces the paper's baseline as the authors' code runs it
(``utils_influence.py`` in github.com/misonuma/untrac): the exact Hessian, a fresh pool batch per
HVP, LiSSA as the undamped decay-rate recursion, Arnoldi keeping the top-p by |λ| and dividing by
λ_k without damping. Its residual is checked against the exact Hessian of the whole pool.

Every solve is recorded in ``counters["hif_solver"]`` (metrics.json; a line in summary.md):
estimated λ_max, the scale, per-subset residuals and a status — ``converged`` (residual ≤ 1e-3),
``truncated`` (bounded but not converged), ``diverged`` (LiSSA: residual above 1, i.e. worse than
x = 0, non-finite, or a scale with no contraction); Arnoldi: ``low-rank`` (the top-p projection
leaves the rest of v unsolved; that is the method) or, authors' variant only, ``near-singular``
(a kept |λ_k| below 1e-3 of the largest).

Sign (DESIGN §2): removing Z moves θ by a Newton step +H⁻¹ g_Z (ascent, §4.3), so the test loss
changes by +g'ᵀH⁻¹g_Z — positive when Z helped Z'. The inverse is applied to the *test* side: one
solve per test subset, since Eq. 8 is symmetric in the inverse's placement.
"""

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
from untrac.progress import tqdm

from untrac.errors import UntracError
from untrac.methods import ScoreInputs, final_rows
from untrac.methods.grads import HessianBatches, mean_gradient, mean_unit_gradient, pool_hvp, trainable
from untrac.methods.hessian import PoolOperator, top_eigenvalue

log = logging.getLogger(__name__)

HVP = Callable[[torch.Tensor], torch.Tensor]
VARIANTS = ("default", "authors")
SCALE_MARGIN = 1.1  # s = 1.1·(λ̂_max + λ): the Lanczos estimate approaches λ_max from below
CONVERGED = 1e-3  # relative residual below which a solve counts as converged


# -- LiSSA -----------------------------------------------------------------------------------------
def lissa_inverse_hvp(op: HVP, v: torch.Tensor, iterations: int, scale: float, damping: float
                      ) -> tuple[torch.Tensor, list[float]]:
    """LiSSA (Agarwal et al. 2017; Koh & Liang 2017): (M + λI)⁻¹v by a Neumann series, M fixed.

    h_0 = v,  h_{k+1} = h_k + r_k,  r_k = v − (M + λI) h_k / s,  result x = h_K / s.
    r_k is exactly the residual of x_k = h_k/s, so the residual history is free; one extra product
    gives the residual of the returned x. The recursion contracts iff 0 < λ_i + λ < 2s for every
    eigenvalue λ_i of M (M + λI positive definite, s above half its top eigenvalue).
    Returns x and the relative residuals ‖r_k‖/‖v‖ of x_0 … x_K (K + 1 values).
    """
    h, history, norm = v.clone(), [], v.norm().item()
    for _ in range(iterations + 1):
        r = v - (op(h) + damping * h) / scale
        history.append(r.norm().item() / norm if norm > 0 else 0.0)
        if len(history) <= iterations:
            h = h + r
    return h / scale, history


def lissa_authors(hvp: HVP, v: torch.Tensor, iterations: int, scale: float) -> torch.Tensor:
    """The authors' LiSSA (``lissa`` in utils_influence.py of misonuma/untrac), written anew here:
    t_0 = v, t_k = t_{k−1} − H_k t_{k−1}/s, result (Σ_{k=0}^{K} t_k)/s — decay rate 1/s, a fresh
    batch's Hessian H_k at every step, no damping."""
    term, total = v.clone(), v.clone()
    for _ in range(iterations):
        term = term - hvp(term) / scale
        total = total + term
    return total / scale


# -- Arnoldi ---------------------------------------------------------------------------------------
@dataclass
class Eigens:
    """Kept eigenpairs, in the Krylov basis: u_k = basisᵀ coords[:, k].

    ``values`` [p], ``coords`` [n, p] (orthonormal columns), ``basis`` [n, #params] (orthonormal
    rows): n + 1 parameter-sized vectors in memory, what Arnoldi needs anyway.
    """

    values: torch.Tensor
    coords: torch.Tensor
    basis: torch.Tensor

    @property
    def vectors(self) -> torch.Tensor:
        """The eigenvectors in parameter space, [#params, p] (for inspection and tests)."""
        return self.basis.T @ self.coords.to(self.basis)


def arnoldi_iteration(hvp: HVP, start: torch.Tensor, iterations: int, tol: float = 1e-10
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """n steps of Arnoldi: orthonormal Krylov rows q_1..q_k and the Hessenberg matrix A with
    M q_k = Σ_{j≤k+1} A[j, k] q_j (shape (k+1) × k, k ≤ n; float64 on the CPU).

    Gram–Schmidt runs twice per step ("twice is enough") to keep the basis orthogonal in finite
    precision; the iteration stops early when the Krylov space is invariant (the residual vanishes).
    """
    basis = torch.zeros(iterations, start.numel(), dtype=start.dtype, device=start.device)
    basis[0] = start / start.norm()
    hess = torch.zeros(iterations + 1, iterations, dtype=torch.float64)
    for k in tqdm(range(iterations), desc="arnoldi", leave=False):
        w = hvp(basis[k])
        scale = w.norm().item()
        for _ in range(2):
            c = basis[:k + 1] @ w
            w = w - basis[:k + 1].T @ c
            hess[:k + 1, k] += c.double().cpu()
        residual = w.norm().item()
        hess[k + 1, k] = residual
        if residual <= tol * max(scale, 1e-30):
            return hess[:k + 2, :k + 1], basis[:k + 1]
        if k + 1 < iterations:
            basis[k + 1] = w / residual
    return hess, basis


# A Ritz pair is kept only when its residual ‖M u − θ u‖ = β_n |y_nk| is small beside the
# denominator θ + λ it will divide by: poorly converged low Ritz values otherwise dominate the inverse
# (measured: with n = p = 25 on the default θ0, a bottom Ritz value ≈ 5e-5 got ~100× the weight of
# the top one and flipped signs between seeds). The residual bound is the standard Lanczos one
# (Parlett, The Symmetric Eigenvalue Problem, §13.2); Schioppa et al. keep top-p of n > p for the
# same reason (the extremal pairs converge first).
RITZ_TOL = 0.1


def distill(hess: torch.Tensor, basis: torch.Tensor, topk: int, psd: bool = True,
            damping: float = 0.0) -> Eigens:
    """Schioppa et al. (2022) distillation: eigenpairs of the square Hessenberg part, top-p by |λ|.

    The operator is symmetric, so its Arnoldi matrix is tridiagonal up to round-off: keep the
    band, symmetrise, ``eigh``. ``psd``: the operator is PSD (the GGN), so its Ritz values are
    ≥ 0 and negative ones are round-off, clipped to 0; and only converged pairs are kept — those
    whose residual β_n|y_nk| ≤ ``RITZ_TOL``·(θ_k + damping) — then the top-p of them by λ.
    """
    n = hess.shape[1]
    band = torch.ones(n, n, dtype=torch.bool).triu(-1) & torch.ones(n, n, dtype=torch.bool).tril(1)
    square = hess[:n, :n] * band
    values, vecs = torch.linalg.eigh(0.5 * (square + square.T))
    order = values.abs().argsort(descending=True)
    if psd:
        values = values.clamp_min(0.0)
        beta = hess[n, n - 1].abs() if hess.shape[0] > n else torch.zeros((), dtype=hess.dtype)
        converged = beta * vecs[n - 1].abs() <= RITZ_TOL * (values + damping)
        order = order[converged[order]]
    keep = order[:topk]
    return Eigens(values=values[keep], coords=vecs[:, keep], basis=basis[:n])


def arnoldi_eigens(hvp: HVP, dim: int, iterations: int, topk: int, seed: int, like: torch.Tensor,
                   psd: bool = True, damping: float = 0.0) -> Eigens:
    """Top-``topk`` eigenpairs by |λ| from ``iterations`` Arnoldi products, random start (seeded)."""
    hess, basis = arnoldi_iteration(hvp, _start(dim, seed, like), iterations)
    return distill(hess, basis, topk, psd, damping)


def arnoldi_inverse_hvp(eig: Eigens, v: torch.Tensor, damping: float) -> torch.Tensor:
    """(M + λI)⁻¹v restricted to the kept eigenvectors: Σ_k u_k (u_kᵀv) / (λ_k + λ)."""
    coords = eig.coords.to(v)
    projected = coords.T @ (eig.basis @ v)  # u_kᵀ v for every kept k
    return eig.basis.T @ (coords @ (projected / (eig.values.to(v) + damping)))


def _start(dim: int, seed: int, like: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(dim, generator=gen, dtype=torch.float64).to(like)


# -- Eq. 8 -----------------------------------------------------------------------------------------
def hif(train_grad: torch.Tensor, inv_hessian_test_grad: torch.Tensor) -> float:
    """Eq. 8: HIF(Z', Z) = (Σ_i ĝ_i)ᵀ H⁻¹ (Σ_j g'_j), with H⁻¹ already applied to the test side."""
    return torch.dot(train_grad, inv_hessian_test_grad).item()


def hif_scores(inputs: ScoreInputs, model: torch.nn.Module, inverse: Callable[[str, torch.Tensor], torch.Tensor],
               tag: str) -> dict[tuple[str, str], float]:
    """Eq. 8 for every (Z, Z'): one inverse per test subset, one gradient per training dataset."""
    cfg, counters = inputs.method, inputs.counters
    common = (inputs.arch, inputs.device, cfg.per_example_batch, inputs.dtype, counters)
    solved = {}
    for s, ds in inputs.test.items():
        solved[s] = inverse(s, mean_gradient(model, ds, *common, desc=f"{tag}: test {s}"))
    train_gradient = mean_unit_gradient if cfg.normalize_train else mean_gradient
    scores = {}
    for z, ds in tqdm(inputs.train.items(), desc=f"{tag}: training datasets", leave=False):
        g = train_gradient(model, ds, *common, desc=f"{tag}: train {z}")
        for s, w in solved.items():
            scores[(z, s)] = hif(g, w)
    return scores


def relative_residual(op: HVP, damping: float, x: torch.Tensor, v: torch.Tensor) -> float:
    """‖(M + λI)x − v‖ / ‖v‖: how well x solves the system (x = 0 scores exactly 1)."""
    return ((op(x) + damping * x - v).norm() / v.norm().clamp_min(1e-30)).item()


def lissa_status(residuals: list[float], contraction: float) -> str:
    """converged / truncated / diverged from the final residuals and the estimated contraction factor."""
    worst = max(residuals, default=0.0)
    if not math.isfinite(worst) or worst > 1.0 or contraction > 1.0:
        return "diverged"
    return "converged" if worst <= CONVERGED else "truncated"


class _Setup:
    """What both solvers share: the model copy, the variant, the fixed pool operator, the record."""

    def __init__(self, inputs: ScoreInputs):
        cfg = inputs.method
        if cfg.variant not in VARIANTS:
            raise UntracError(f"method.variant={cfg.variant!r} is not a HIF variant ({' | '.join(VARIANTS)})")
        if inputs.hessian_pool is None or len(inputs.hessian_pool) == 0:
            raise UntracError(f"method={cfg.name} needs a Hessian pool of training examples (none was given)")
        self.inputs, self.cfg, self.authors = inputs, cfg, cfg.variant == "authors"
        self.model = inputs.fresh_model()
        self.params = trainable(self.model)
        self.dim = sum(p.numel() for p in self.params)
        # The default iterates the GGN; the authors' variant is checked against the exact Hessian.
        self.op = PoolOperator(self.model, inputs.arch, inputs.hessian_pool, cfg.hessian_batch_size,
                               inputs.device, inputs.dtype, inputs.counters, kind="hessian" if self.authors else "ggn")
        self.damping = 0.0 if self.authors else cfg.damping  # the authors' code has no damping
        self.record = {"method": cfg.name, "variant": cfg.variant, "operator": self.op.kind,
                       "damping": self.damping, "pool_examples": self.op.size, "residual": {}}

    def fresh_batch_hvp(self) -> HVP:
        """The authors' stochastic operator: the exact Hessian of a fresh pool batch at every call."""
        i = self.inputs
        draw = HessianBatches(i.hessian_pool, self.cfg.hessian_batch_size, i.arch, i.device, i.seed)
        return pool_hvp(self.model, i.arch, draw, i.dtype, i.counters)

    def finish(self, scores, status: str):
        self.record["status"] = status
        self.inputs.counters.setdefault("hif_solver", []).append(self.record)
        level = logging.WARNING if status in ("diverged", "near-singular") else logging.INFO
        log.log(level, "%s: %s (residuals %s)", self.cfg.name, status, self.record["residual"])
        return final_rows(scores)


def score_lissa(inputs: ScoreInputs):
    """HIF (Eq. 8) with the inverse by LiSSA, ``lissa_iterations`` steps, scale ``lissa_scale``.

    ``lissa_scale: auto`` = 1.1·(λ̂_max + λ), λ̂_max by Lanczos (``hessian.top_eigenvalue``) on the
    same operator (for the authors' variant: the largest |λ| of the exact pool Hessian).
    """
    setup, cfg = _Setup(inputs), inputs.method
    lam_max, steps = top_eigenvalue(setup.op, _start(setup.dim, inputs.seed + 1, setup.params[0].detach()),
                                    cfg.lanczos_iterations)
    top = abs(lam_max) + setup.damping
    scale = SCALE_MARGIN * top if cfg.lissa_scale == "auto" else float(cfg.lissa_scale)
    # Contraction factor of the recursion along the top eigenvector (|1 − (λ_max + λ)/s|).
    contraction = abs(1.0 - top / scale)
    setup.record.update(lambda_max=lam_max, lanczos_steps=steps, scale=scale, iterations=cfg.lissa_iterations,
                        contraction_top=contraction)
    if setup.authors:
        hvp = setup.fresh_batch_hvp()

        def inverse(s, v):
            x = lissa_authors(hvp, v, cfg.lissa_iterations, scale)
            setup.record["residual"][s] = relative_residual(setup.op, 0.0, x, v)
            return x
    else:
        def inverse(s, v):
            x, history = lissa_inverse_hvp(setup.op, v, cfg.lissa_iterations, scale, setup.damping)
            setup.record["residual"][s] = history[-1]
            return x

    scores = hif_scores(inputs, setup.model, inverse, "hif_lissa")
    return setup.finish(scores, lissa_status(list(setup.record["residual"].values()), contraction))


def score_arnoldi(inputs: ScoreInputs):
    """HIF (Eq. 8) with the inverse from Arnoldi (Schioppa et al. 2022): ``arnoldi_iterations``
    products from a seeded random start; the top ``arnoldi_topk`` Ritz pairs by magnitude;
    (M + λI)⁻¹v ≈ Σ_k u_k (u_kᵀv)/(λ_k + λ). Default: M = the GGN (Ritz values ≥ 0); authors:
    a fresh batch's exact Hessian per product, no damping."""
    setup, cfg = _Setup(inputs), inputs.method
    hvp = setup.fresh_batch_hvp() if setup.authors else setup.op
    eig = arnoldi_eigens(hvp, setup.dim, cfg.arnoldi_iterations, cfg.arnoldi_topk, inputs.seed,
                         setup.params[0].detach(), psd=not setup.authors, damping=setup.damping)
    if len(eig.values) == 0:
        raise UntracError(f"hif_arnoldi: no Ritz pair converged in {cfg.arnoldi_iterations} iterations "
                          "(residual > 0.1·(λ_k + damping) for all); raise method.arnoldi_iterations or method.damping")
    denominators = (eig.values + setup.damping).abs()
    smallest, largest = denominators.min().item(), denominators.max().item()
    setup.record.update(kept=len(eig.values), eigenvalues=[round(v, 6) for v in eig.values.tolist()],
                        min_denominator=smallest, max_weight_ratio=largest / max(smallest, 1e-300))
    inputs.counters["arnoldi_eigenvalues"] = setup.record["eigenvalues"]

    def inverse(s, v):
        x = arnoldi_inverse_hvp(eig, v, setup.damping)
        setup.record["residual"][s] = relative_residual(setup.op, setup.damping, x, v)
        return x

    scores = hif_scores(inputs, setup.model, inverse, "hif_arnoldi")
    if setup.authors and not smallest >= CONVERGED * largest:  # dividing by a (near-)zero eigenvalue
        return setup.finish(scores, "near-singular")
    residual = max(setup.record["residual"].values(), default=0.0)
    return setup.finish(scores, "converged" if residual <= CONVERGED else "low-rank")
