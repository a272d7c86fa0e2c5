"""GradDot, GradCos (paper §4.1) and TracIn (Eq. 7): influence as an inner product of gradients.

Sign (DESIGN §2): unlearning Z is gradient *ascent* on Z, which to first order changes the loss
of Z' by +η gᵀg' (Eq. 9), so aligned gradients give a positive influence ("Z helped Z'").

Efficiency: Σ_i Σ_j g_iᵀ g'_j = (Σ_i g_i)ᵀ(Σ_j g'_j), so each set needs one accumulated gradient
and there is no work per pair of examples. The test subsets' gradients are kept (they are few);
each training dataset's gradient is computed once, dotted with all of them and dropped.
Set gradients are gradients of the set's mean loss (see ``grads`` for why that scaling).
"""

import logging
from typing import Callable

import datasets
import numpy as np
import pandas as pd
import torch
from untrac.progress import tqdm

from untrac.method_config import GradConfig, GradCosConfig
from untrac.errors import UntracError
from untrac.methods import Context, Method, Needs, final_rows, register
from untrac.methods.grads import GradientSettings, example_gradients, mean_gradient, mean_unit_gradient, unit_rows

log = logging.getLogger(__name__)


SetGradient = Callable[[torch.nn.Module, datasets.Dataset, str], torch.Tensor]
Combine = Callable[[torch.Tensor, torch.Tensor], float]


def graddot(train_grad: torch.Tensor, test_grad: torch.Tensor) -> float:
    """GradDot (§4.1): (Σ_i g_i)ᵀ(Σ_j g'_j) — TracIn (Eq. 7) at one checkpoint, θ0, with η = 1."""
    return torch.dot(train_grad, test_grad).item()


def gradcos(train_unit_sum: torch.Tensor, test_unit_sum: torch.Tensor) -> float:
    """GradCos (§4.1), per-example normalisation: (Σ_i g_i/‖g_i‖)ᵀ(Σ_j g'_j/‖g'_j‖).

    The inputs are already sums (means) of unit-length per-example gradients; normalising each
    example's gradient keeps outliers with huge gradients from dominating (Barshan et al. 2020).
    """
    return torch.dot(train_unit_sum, test_unit_sum).item()


def gradcos_summed(train_grad: torch.Tensor, test_grad: torch.Tensor) -> float:
    """GradCos, variant ``summed``: cos(Σ_i g_i, Σ_j g'_j), the cosine of the two set gradients."""
    return torch.nn.functional.cosine_similarity(train_grad, test_grad, dim=0).item()


def tracin_term(lr: float, train_grad: torch.Tensor, test_grad: torch.Tensor) -> float:
    """One checkpoint's term of TracIn (Eq. 7): η_t (Σ_i g_i(θ_t))ᵀ(Σ_j g'_j(θ_t))."""
    return lr * torch.dot(train_grad, test_grad).item()


def pairwise(inputs: Context, model: torch.nn.Module, set_gradient: SetGradient,
             combine: Combine, tag: str, tests: dict[str, torch.Tensor] | None = None) -> dict[tuple[str, str], float]:
    """``combine(v_Z, v_Z')`` for every (training dataset, test subset), one vector per set
    (``tests``: the test subsets' vectors when already computed)."""
    if tests is None:
        tests = test_vectors(inputs, model, set_gradient, tag)
    scores = {}
    for z, ds in tqdm(inputs.train.items(), desc=f"{tag}: training datasets", leave=False):
        g = set_gradient(model, ds, f"{tag}: train {z}")
        for s, t in tests.items():
            scores[(z, s)] = combine(g, t)
    return scores


def test_vectors(inputs: Context, model, set_gradient: SetGradient, tag: str) -> dict[str, torch.Tensor]:
    return {s: set_gradient(model, ds, f"{tag}: test {s}") for s, ds in inputs.test.items()}


def example_scores(inputs: Context, model, tests: dict[str, torch.Tensor], unit: bool, tag: str) -> pd.DataFrame:
    """Per training example i and test subset Z': g_iᵀ v_Z' (GradDot: v = mean test gradient) or
    (g_i/‖g_i‖)ᵀ v_Z' (GradCos: v = mean unit test gradient). Their mean over a training dataset's
    examples is that dataset's set score, since the set vector is the mean of the rows."""
    names, matrix = list(tests), torch.stack(list(tests.values()), dim=1)  # [#trainable, #subsets]
    parts = []
    for z, ds in inputs.train.items():
        blocks = [(unit_rows(rows) if unit else rows) @ matrix
                  for rows in example_gradients(model, ds, GradientSettings.of(inputs), inputs.counters,
                                                f"{tag}: examples of {z}")]
        scores = torch.cat(blocks).double().cpu().numpy()
        for j, s in enumerate(names):
            parts.append(pd.DataFrame({"train_dataset": z, "example": np.arange(len(ds)), "test_subset": s,
                                       "score": scores[:, j]}))
    return pd.concat(parts, ignore_index=True)


def _mean_grad(inputs: Context) -> SetGradient:
    settings = GradientSettings.of(inputs)
    return lambda model, ds, desc: mean_gradient(model, ds, settings, inputs.counters, desc)


def _unit_grad(inputs: Context) -> SetGradient:
    settings = GradientSettings.of(inputs)
    return lambda model, ds, desc: mean_unit_gradient(model, ds, settings, inputs.counters, desc)


def score_graddot(inputs: Context):
    """GradDot (§4.1) at θ0 for every (Z, Z')."""
    model = inputs.fresh_model()
    tests = test_vectors(inputs, model, _mean_grad(inputs), "graddot")
    scores = pairwise(inputs, model, _mean_grad(inputs), graddot, "graddot", tests)
    if inputs.examples is not None:
        inputs.examples.append(example_scores(inputs, model, tests, unit=False, tag="graddot"))
    return final_rows(scores)


def score_gradcos(inputs: Context):
    """GradCos (§4.1) at θ0: ``variant=default`` normalises per example, ``summed`` the set gradients."""
    variant = inputs.method.variant
    if variant == "summed":
        scores = pairwise(inputs, inputs.fresh_model(), _mean_grad(inputs), gradcos_summed, "gradcos")
        if inputs.examples is not None:
            log.warning("rank.top_k: method.variant=summed (a cosine of set gradients) has no per-example "
                        "scores; method.variant=default has")
    elif variant == "default":
        model = inputs.fresh_model()
        tests = test_vectors(inputs, model, _unit_grad(inputs), "gradcos")
        scores = pairwise(inputs, model, _unit_grad(inputs), gradcos, "gradcos", tests)
        if inputs.examples is not None:
            inputs.examples.append(example_scores(inputs, model, tests, unit=True, tag="gradcos"))
    else:
        raise UntracError(f"method.variant={variant!r} is not a GradCos variant (default | summed)")
    return final_rows(scores)


def score_tracin(inputs: Context):
    """TracIn (Eq. 7): Σ_t over the saved checkpoints θ_t of η_t × GradDot at θ_t.

    Each checkpoint's weights are loaded into a copy of θ0's model (same architecture and frozen
    parameters); η_t is the learning rate in effect when the checkpoint was saved.
    """
    if not inputs.checkpoints:
        raise UntracError("method=tracin needs the checkpoints saved while training θ0 (none were given)")
    model = inputs.fresh_model()
    total: dict[tuple[str, str], float] = {}
    for ckpt in tqdm(inputs.checkpoints, desc="tracin: checkpoints", leave=False):
        ckpt.load(model)
        terms = pairwise(inputs, model, _mean_grad(inputs),
                         lambda g, t, lr=ckpt.lr: tracin_term(lr, g, t), f"tracin@{ckpt.step}")
        for key, value in terms.items():
            total[key] = total.get(key, 0.0) + value
    inputs.counters["tracin_checkpoints"] = inputs.counters.get("tracin_checkpoints", 0) + len(inputs.checkpoints)
    return final_rows(total)


register(Method("graddot", GradConfig, score_graddot, Needs(examples=True)))
register(Method("gradcos", GradCosConfig, score_gradcos, Needs(examples=True)))
register(Method("tracin", GradConfig, score_tracin, Needs(checkpoints=True)))
