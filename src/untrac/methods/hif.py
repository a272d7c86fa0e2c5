"""Hessian-based influence functions (paper §4.2, Eq. 8) with LiSSA or Arnoldi for H⁻¹.

HIF(Z', Z) = (Σ_i ĝ_i)ᵀ (H + λI)⁻¹ (Σ_j g'_j), where ĝ_i are the training gradients, normalised
per example when ``method.normalize_train`` (paper §5), g'_j the test gradients, H the Hessian of
the mean loss over the Hessian pool (256 training examples, §5), λ = ``method.damping``.

Sign (DESIGN §2): removing Z moves θ by a Newton step +H⁻¹ g_Z (ascent, §4.3), so the test loss
changes by +g'ᵀH⁻¹g_Z — positive when Z helped Z'. The inverse is applied to the *test* side: one
solve per test subset rather than one per training dataset, since Eq. 8 is symmetric in H⁻¹'s
placement (H is symmetric). Set gradients are means over examples (see ``grads``).
"""

import logging
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from untrac.errors import UntracError
from untrac.methods import ScoreInputs, final_rows
from untrac.methods.grads import HessianBatches, mean_gradient, mean_unit_gradient, pool_hvp, trainable

log = logging.getLogger(__name__)

HVP = Callable[[torch.Tensor], torch.Tensor]


# -- LiSSA -----------------------------------------------------------------------------------------
def lissa_inverse_hvp(hvp: HVP, v: torch.Tensor, iterations: int, scale: float, damping: float) -> torch.Tensor:
    """LiSSA (Agarwal et al. 2017, as used by Koh & Liang 2017): (H + λI)⁻¹v by a Neumann series.

    h_0 = v,  h_k = v + (I − (H_k + λI)/s) h_{k−1},  result h_K / s,
    with H_k the Hessian of a fresh batch at step k. The fixed point is h = s (H + λI)⁻¹ v; the
    recursion converges when λ_min(H) + λ > 0 and s > λ_max(H) + λ. λ is added to H itself (Koh &
    Liang's code scales it by s instead), so LiSSA and Arnoldi target the same (H + λI)⁻¹.
    """
    h = v.clone()
    for _ in range(iterations):
        h = v + h - (hvp(h) + damping * h) / scale
    return h / scale


# -- Arnoldi ---------------------------------------------------------------------------------------
@dataclass
class Eigens:
    """Top eigenpairs of H, kept in the Krylov basis: u_k = basisᵀ coords[:, k].

    ``values`` [p], ``coords`` [n, p] (orthonormal columns), ``basis`` [n, #params] (orthonormal
    rows). Storing the n basis rows and a small n × p matrix, rather than p dense eigenvectors as
    well, keeps the memory at n + 1 parameter-sized vectors (what Arnoldi needs anyway).
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
    H q_k = Σ_{j≤k+1} A[j, k] q_j (shape (k+1) × k, k ≤ n; float64 on the CPU).

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


def distill(hess: torch.Tensor, basis: torch.Tensor, topk: int) -> Eigens:
    """Schioppa et al. (2022) distillation: eigenpairs of the square Hessenberg part, top-p by |λ|.

    H is symmetric, so its Arnoldi matrix is tridiagonal up to noise (and up to the differences
    between the fresh batches of successive HVPs): keep the tridiagonal band, symmetrise, and
    take ``eigh``; then keep the ``topk`` eigenvalues of largest absolute value.
    """
    n = hess.shape[1]
    band = torch.ones(n, n, dtype=torch.bool).triu(-1) & torch.ones(n, n, dtype=torch.bool).tril(1)
    square = hess[:n, :n] * band
    values, vecs = torch.linalg.eigh(0.5 * (square + square.T))
    keep = values.abs().argsort(descending=True)[:topk]
    return Eigens(values=values[keep], coords=vecs[:, keep], basis=basis[:n])


def arnoldi_eigens(hvp: HVP, dim: int, iterations: int, topk: int, seed: int, like: torch.Tensor) -> Eigens:
    """Top-``topk`` eigenpairs of H by |λ| from ``iterations`` Arnoldi HVPs, random start (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(dim, generator=gen, dtype=torch.float64).to(like)
    hess, basis = arnoldi_iteration(hvp, start, iterations)
    return distill(hess, basis, topk)


def arnoldi_inverse_hvp(eig: Eigens, v: torch.Tensor, damping: float) -> torch.Tensor:
    """(H + λI)⁻¹v restricted to the kept eigenvectors: Σ_k u_k (u_kᵀv) / (λ_k + λ)."""
    coords = eig.coords.to(v)
    projected = coords.T @ (eig.basis @ v)  # u_kᵀ v for every kept k
    return eig.basis.T @ (coords @ (projected / (eig.values.to(v) + damping)))


# -- Eq. 8 -----------------------------------------------------------------------------------------
def hif(train_grad: torch.Tensor, inv_hessian_test_grad: torch.Tensor) -> float:
    """Eq. 8: HIF(Z', Z) = (Σ_i ĝ_i)ᵀ H⁻¹ (Σ_j g'_j), with H⁻¹ already applied to the test side."""
    return torch.dot(train_grad, inv_hessian_test_grad).item()


def hif_scores(inputs: ScoreInputs, model: torch.nn.Module, inverse: Callable[[torch.Tensor], torch.Tensor],
               tag: str) -> dict[tuple[str, str], float]:
    """Eq. 8 for every (Z, Z'): one inverse-HVP per test subset, one gradient per training dataset."""
    cfg, counters = inputs.method, inputs.counters
    common = (inputs.arch, inputs.device, cfg.per_example_batch, inputs.dtype, counters)
    solved = {}
    for s, ds in inputs.test.items():
        g_test = mean_gradient(model, ds, *common, desc=f"{tag}: test {s}")
        solved[s] = inverse(g_test)
    train_gradient = mean_unit_gradient if cfg.normalize_train else mean_gradient
    scores = {}
    for z, ds in tqdm(inputs.train.items(), desc=f"{tag}: training datasets", leave=False):
        g = train_gradient(model, ds, *common, desc=f"{tag}: train {z}")
        for s, w in solved.items():
            scores[(z, s)] = hif(g, w)
    return scores


def _pool(inputs: ScoreInputs) -> HessianBatches:
    if inputs.hessian_pool is None or len(inputs.hessian_pool) == 0:
        raise UntracError(f"method={inputs.method.name} needs a Hessian pool of training examples (none was given)")
    return HessianBatches(inputs.hessian_pool, inputs.method.hessian_batch_size, inputs.arch, inputs.device,
                          inputs.seed)


def score_lissa(inputs: ScoreInputs):
    """HIF (Eq. 8) with (H + λI)⁻¹g' by LiSSA: ``lissa_iterations`` steps, a fresh pool batch each.

    Convergence needs ``lissa_scale`` > λ_max(H) + damping; with fewer iterations than the
    condition number the result is a truncated Neumann series (the paper uses 10 iterations).
    """
    cfg = inputs.method
    model = inputs.fresh_model()
    _pool(inputs)  # fail early without a pool

    def inverse(v):
        # The same seeded batch stream for every test subset: each solve sees the same stochastic H.
        hvp = pool_hvp(model, inputs.arch, _pool(inputs), inputs.dtype, inputs.counters)
        return lissa_inverse_hvp(hvp, v, cfg.lissa_iterations, cfg.lissa_scale, cfg.damping)

    return final_rows(hif_scores(inputs, model, inverse, "hif_lissa"))


def score_arnoldi(inputs: ScoreInputs):
    """HIF (Eq. 8) with H⁻¹ from Arnoldi (Schioppa et al. 2022), pinned variant "fresh-batch Hermitian":

    ``arnoldi_iterations`` HVPs from a seeded random start, each on a fresh batch of the Hessian
    pool; the Hessenberg matrix's tridiagonal band symmetrised and diagonalised; the top
    ``arnoldi_topk`` eigenpairs by |λ| kept; H⁻¹v ≈ Σ_k u_k (u_kᵀv)/(λ_k + damping).
    """
    cfg = inputs.method
    model = inputs.fresh_model()
    hvp = pool_hvp(model, inputs.arch, _pool(inputs), inputs.dtype, inputs.counters)
    params = trainable(model)
    dim = sum(p.numel() for p in params)
    eig = arnoldi_eigens(hvp, dim, cfg.arnoldi_iterations, cfg.arnoldi_topk, inputs.seed, params[0].detach())
    log.info("hif_arnoldi: kept %d eigenvalues, |λ| from %.3g to %.3g", len(eig.values),
             eig.values.abs().min().item(), eig.values.abs().max().item())
    inputs.counters["arnoldi_eigenvalues"] = [round(v, 6) for v in eig.values.tolist()]
    return final_rows(hif_scores(inputs, model, lambda v: arnoldi_inverse_hvp(eig, v, cfg.damping), "hif_arnoldi"))
