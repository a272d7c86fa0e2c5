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
from typing import Callable

import torch
from untrac.progress import tqdm

from untrac.method_config import ArnoldiConfig, LissaConfig
from untrac.errors import UntracError
from untrac.methods import Context, Method, Needs, final_rows, register
from untrac.methods.arnoldi import HVP, RitzSelection, arnoldi_eigens, arnoldi_inverse_hvp, random_start
from untrac.methods.grads import (GradientSettings, HessianBatches, mean_gradient, mean_unit_gradient, pool_hvp,
                                  trainable)
from untrac.methods.hessian import PoolOperator, top_eigenvalue

log = logging.getLogger(__name__)

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


# -- Eq. 8 -----------------------------------------------------------------------------------------
def hif(train_grad: torch.Tensor, inv_hessian_test_grad: torch.Tensor) -> float:
    """Eq. 8: HIF(Z', Z) = (Σ_i ĝ_i)ᵀ H⁻¹ (Σ_j g'_j), with H⁻¹ already applied to the test side."""
    return torch.dot(train_grad, inv_hessian_test_grad).item()


def hif_scores(inputs: Context, model: torch.nn.Module, inverse: Callable[[str, torch.Tensor], torch.Tensor],
               tag: str) -> dict[tuple[str, str], float]:
    """Eq. 8 for every (Z, Z'): one inverse per test subset, one gradient per training dataset."""
    cfg, counters, settings = inputs.method, inputs.counters, GradientSettings.of(inputs)
    solved = {}
    for s, ds in inputs.test.items():
        solved[s] = inverse(s, mean_gradient(model, ds, settings, counters, desc=f"{tag}: test {s}"))
    train_gradient = mean_unit_gradient if cfg.normalize_train else mean_gradient
    scores = {}
    for z, ds in tqdm(inputs.train.items(), desc=f"{tag}: training datasets", leave=False):
        g = train_gradient(model, ds, settings, counters, desc=f"{tag}: train {z}")
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

    def __init__(self, inputs: Context):
        cfg = inputs.method
        if inputs.hessian_pool is None or len(inputs.hessian_pool) == 0:
            raise UntracError(f"method={cfg.name} needs a Hessian pool of training examples (none was given)")
        self.inputs, self.cfg, self.authors = inputs, cfg, cfg.variant == "authors"
        self.model = inputs.fresh_model()
        self.params = trainable(self.model)
        self.dim = sum(p.numel() for p in self.params)
        # The default iterates the GGN; the authors' variant is checked against the exact Hessian.
        chunks = GradientSettings(inputs.arch, inputs.device, cfg.hessian_batch_size, inputs.dtype)
        self.op = PoolOperator(self.model, inputs.hessian_pool, chunks, inputs.counters,
                               kind="hessian" if self.authors else "ggn")
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
        self.record["graphs_kept"] = bool(self.op.keep_graphs)  # speed only (hessian.PoolOperator)
        self.inputs.counters.setdefault("hif_solver", []).append(self.record)
        level = logging.WARNING if status in ("diverged", "near-singular") else logging.INFO
        log.log(level, "%s: %s (residuals %s)", self.cfg.name, status, self.record["residual"])
        return final_rows(scores)


def score_lissa(inputs: Context):
    """HIF (Eq. 8) with the inverse by LiSSA, ``lissa_iterations`` steps, scale ``lissa_scale``.

    ``lissa_scale: auto`` = 1.1·(λ̂_max + λ), λ̂_max by Lanczos (``hessian.top_eigenvalue``) on the
    same operator (for the authors' variant: the largest |λ| of the exact pool Hessian).
    """
    setup, cfg = _Setup(inputs), inputs.method
    lam_max, steps = top_eigenvalue(setup.op, random_start(setup.dim, inputs.seed + 1, setup.params[0].detach()),
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


def score_arnoldi(inputs: Context):
    """HIF (Eq. 8) with the inverse from Arnoldi (Schioppa et al. 2022): ``arnoldi_iterations``
    products from a seeded random start; the top ``arnoldi_topk`` Ritz pairs by magnitude;
    (M + λI)⁻¹v ≈ Σ_k u_k (u_kᵀv)/(λ_k + λ). Default: M = the GGN (Ritz values ≥ 0); authors:
    a fresh batch's exact Hessian per product, no damping."""
    setup, cfg = _Setup(inputs), inputs.method
    hvp = setup.fresh_batch_hvp() if setup.authors else setup.op
    selection = RitzSelection(cfg.arnoldi_topk, psd=not setup.authors, damping=setup.damping)
    eig = arnoldi_eigens(hvp, setup.dim, cfg.arnoldi_iterations, selection, inputs.seed, setup.params[0].detach())
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


register(Method("hif_lissa", LissaConfig, score_lissa, Needs(pool=True)))
register(Method("hif_arnoldi", ArnoldiConfig, score_arnoldi, Needs(pool=True)))
