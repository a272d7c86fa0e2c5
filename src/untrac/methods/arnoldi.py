"""Arnoldi iteration for HIF's inverse (Schioppa et al. 2022, "Scaling up influence functions", §3).

n products of a symmetric operator M from a seeded random start give a Krylov basis and a
Hessenberg matrix; its top-p Ritz pairs (converged ones only for a PSD M, ``RITZ_TOL``) give
(M + λI)⁻¹v ≈ Σ_k u_k (u_kᵀv)/(λ_k + λ). Used by ``hif.score_arnoldi``; no model knowledge here.
"""

from dataclasses import dataclass
from typing import Callable

import torch

from untrac.progress import tqdm

HVP = Callable[[torch.Tensor], torch.Tensor]


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


@dataclass(frozen=True)
class RitzSelection:
    """Which Ritz pairs ``distill`` keeps: the top ``topk`` (p) by |λ|.

    ``psd``: the operator is PSD (the GGN), so its Ritz values are ≥ 0 and negative ones are
    round-off, clipped to 0; and only converged pairs compete — those whose residual
    β_n|y_nk| ≤ ``RITZ_TOL``·(θ_k + ``damping``), the denominator the inverse will divide by.
    ``psd=False`` (the authors' variant, an indefinite Hessian): all pairs, top-p by |λ|.
    """

    topk: int
    psd: bool = True
    damping: float = 0.0


def distill(hess: torch.Tensor, basis: torch.Tensor, selection: RitzSelection) -> Eigens:
    """Schioppa et al. (2022) distillation: eigenpairs of the square Hessenberg part, top-p by |λ|
    among those ``selection`` admits.

    The operator is symmetric, so its Arnoldi matrix is tridiagonal up to round-off: keep the
    band, symmetrise, ``eigh``.
    """
    n = hess.shape[1]
    band = torch.ones(n, n, dtype=torch.bool).triu(-1) & torch.ones(n, n, dtype=torch.bool).tril(1)
    square = hess[:n, :n] * band
    values, vecs = torch.linalg.eigh(0.5 * (square + square.T))
    order = values.abs().argsort(descending=True)
    if selection.psd:
        values = values.clamp_min(0.0)
        beta = hess[n, n - 1].abs() if hess.shape[0] > n else torch.zeros((), dtype=hess.dtype)
        converged = beta * vecs[n - 1].abs() <= RITZ_TOL * (values + selection.damping)
        order = order[converged[order]]
    keep = order[:selection.topk]
    return Eigens(values=values[keep], coords=vecs[:, keep], basis=basis[:n])


def arnoldi_eigens(hvp: HVP, dim: int, iterations: int, selection: RitzSelection, seed: int,
                   like: torch.Tensor) -> Eigens:
    """The eigenpairs ``selection`` keeps from ``iterations`` Arnoldi products on a random start
    (seeded; ``dim`` entries, dtype and device of ``like``)."""
    hess, basis = arnoldi_iteration(hvp, random_start(dim, seed, like), iterations)
    return distill(hess, basis, selection)


def arnoldi_inverse_hvp(eig: Eigens, v: torch.Tensor, damping: float) -> torch.Tensor:
    """(M + λI)⁻¹v restricted to the kept eigenvectors: Σ_k u_k (u_kᵀv) / (λ_k + λ)."""
    coords = eig.coords.to(v)
    projected = coords.T @ (eig.basis @ v)  # u_kᵀ v for every kept k
    return eig.basis.T @ (coords @ (projected / (eig.values.to(v) + damping)))


def random_start(dim: int, seed: int, like: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(dim, generator=gen, dtype=torch.float64).to(like)
