"""EK-FAC influence (Grosse et al. 2023; George et al. 2018) through ``kronfluence``, at dataset level.

EKFAC(Z', Z) = (Σ_i ĝ_i)ᵀ (G_EKFAC + λI)⁻¹ (Σ_j g'_j): HIF's Eq. 8 with the Hessian replaced by the
eigenvalue-corrected Kronecker-factored approximation of the Gauss–Newton Hessian G of the mean
loss over the Hessian pool (``method.hessian_examples`` training examples, as for HIF). For each
tracked linear layer, K-FAC's factors A = E[a aᵀ] (layer inputs) and S = E[s sᵀ] (gradients at
its outputs) give the eigenbasis Q_A ⊗ Q_S; the eigenvalue correction replaces A ⊗ S's eigenvalues
by Λ = E_n[(Q_Sᵀ G_n Q_A)²], the second moment of the per-example gradients in that basis. The
factors, the correction and the preconditioning are kronfluence's; this module supplies our loss
and turns its pairwise scores into dataset-level ones.

Parameter space: the ``nn.Linear`` modules with a trainable parameter (all linear layers of T5 /
OPT, lm head included; GPT-2's ``Conv1D`` layers are converted to the equal ``nn.Linear`` first);
embeddings and layer norms have no Kronecker factors and are left out. The share of the model's
parameters this covers is ``counters['params_share']`` (metrics.json) and a line of summary.md.

G: ``method.fisher=sampled`` (default) fits the factors to gradients of labels drawn from the model's
own predictions, whose second moment is the GGN (the true Fisher of a softmax). Each example's
summed sampled NLL is scaled by 1/√T (T its target tokens) so the expectation is the GGN of our
per-example loss, the *mean* token NLL: E[g gᵀ] = (1/T²)·Σ_t J_tᵀ H_t J_t unscaled, (1/T)·Σ_t … scaled.
``empirical`` uses the true labels (empirical Fisher, deterministic; what the exact tests use).

Damping: λ = ``method.damping``, added to every corrected eigenvalue, so the operator is exactly
(G_EKFAC + λI)⁻¹ — the same target as hif_* with the same λ. kronfluence's heuristic (0.1 × mean
eigenvalue) is logged for comparison (``counters['ekfac_mean_eigenvalue']``).

Sign: kronfluence scores g_queryᵀ (G + λI)⁻¹ g_train with the loss as measurement, "positive =
helpful": removing Z moves θ by +(G + λI)⁻¹ g_Z and changes the test loss by +g'ᵀ(G + λI)⁻¹g_Z,
our convention (DESIGN §2) with no sign flip (tests/methods/test_ekfac.py checks it against a
dense solve).

Aggregation: every example carries a weight w in its loss, Σ_n w_n L_n: 1/N' for test examples,
1/N (or 1/(N‖g_i‖) with ``method.normalize_train``, ‖g_i‖ over the tracked layers from
kronfluence's identity-preconditioned self-scores) for training examples. One side's weighted
gradient is aggregated into a single query (``aggregate_query_gradients``), the other side is
scored per example and summed per set: the weighted sums are exactly the mean (normalised) set
gradients of Eq. 8. Whichever side has fewer sets is the query (fewer passes over the data).
"""

import bisect
import gc
import logging
import tempfile
from contextlib import contextmanager
from typing import Any

import datasets
import torch
import torch.nn.functional as F

from untrac.data.collate import IGNORE, collate
from untrac.method_config import EkfacConfig
from untrac.errors import UntracError
from untrac.losses import example_losses, token_logits
from untrac.methods import Context, Method, Needs, final_rows, register
from untrac.models import Arch, conv1d_as_linear, leaf_modules, record_coverage, unflatten_opt_mlp

try:  # an optional extra: the other methods must not need it
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from kronfluence.utils.dataset import DataLoaderKwargs
except ModuleNotFoundError as err:  # only a missing kronfluence; a broken install still raises
    if err.name != "kronfluence":
        raise
    Analyzer = None
    Task = object

log = logging.getLogger(__name__)

MISSING = ("method=ekfac needs kronfluence: pip install 'untrac[ekfac]' && pip install --no-deps "
           "'kronfluence>=1.0,<1.1' (make install does both)")
ALL_MODULES = "all_modules"  # kronfluence's key for scores summed over the tracked modules


class WeightedSets(torch.utils.data.Dataset):
    """Several datasets end to end, each example with a loss weight: items are ``(row, weight)``."""

    def __init__(self, parts: list[tuple[datasets.Dataset, torch.Tensor]]):
        self.parts = parts
        self.ends = torch.tensor([len(ds) for ds, _ in parts]).cumsum(0).tolist()

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, index: int):
        part = bisect.bisect_right(self.ends, index)
        local = index - (self.ends[part - 1] if part else 0)
        ds, weights = self.parts[part]
        return ds[local], weights[local].item()

    def spans(self) -> list[slice]:
        """Each part's positions in the concatenation."""
        return [slice(a, b) for a, b in zip([0] + self.ends[:-1], self.ends)]


def collate_weighted(pad_id: int):
    def fn(items: list[tuple[dict[str, Any], float]]) -> dict[str, torch.Tensor]:
        keys = [k for k in ("input_ids", "labels") if k in items[0][0]]
        batch = collate({k: [row[k] for row, _ in items] for k in keys}, pad_id)
        batch["weight"] = torch.tensor([w for _, w in items], dtype=torch.float64)
        return batch
    return fn


class UntracTask(Task):
    """Our per-example loss (mean token NLL, ``losses``) as a kronfluence task."""

    def __init__(self, arch: Arch, modules: list[str], generator: torch.Generator):
        self.arch, self.modules, self.generator = arch, modules, generator

    def weighted_loss(self, batch, model) -> torch.Tensor:
        """Σ_n w_n L_n: its gradient is the weighted sum of the per-example gradients."""
        losses = example_losses(model, batch, self.arch)
        return (losses * batch["weight"].to(losses)).sum()

    def compute_train_loss(self, batch, model, sample: bool = False) -> torch.Tensor:
        if not sample:
            return self.weighted_loss(batch, model)
        # True Fisher: targets drawn from the model's predictions (teacher-forced inputs kept).
        logits, targets = token_logits(model, batch, self.arch)
        scored = targets != IGNORE
        with torch.no_grad():
            probs = torch.softmax(logits[scored].detach(), dim=-1)
            drawn = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
        sampled = targets.masked_scatter(scored, drawn)
        nll = F.cross_entropy(logits.transpose(1, 2), sampled, ignore_index=IGNORE, reduction="none").sum(dim=1)
        # 1/√T: the Fisher of the *mean* token NLL is then the GGN of that loss (see module docstring).
        return (nll / scored.sum(dim=1).clamp(min=1).to(nll).sqrt()).sum()

    def compute_measurement(self, batch, model) -> torch.Tensor:
        return self.weighted_loss(batch, model)

    def get_influence_tracked_modules(self) -> list[str]:
        return self.modules

    def get_attention_mask(self, batch):
        """Which positions count in the covariances A and S: real tokens of the side a layer reads."""
        if self.arch.kind == "causal":
            return batch["attention_mask"]
        decoder = (batch["labels"] != IGNORE).long()  # decoder positions = target positions
        return {m: batch["attention_mask"] if reads_encoder(m) else decoder for m in self.modules}


def reads_encoder(module: str) -> bool:
    """Whether a T5 linear layer has one row per *encoder* position: the encoder's layers, and the
    cross-attention keys/values (they project the encoder's output). kronfluence silently ignores a
    mask of the wrong size, so giving these the decoder mask would count padded encoder positions."""
    return module.startswith("encoder.") or (".EncDecAttention." in module and module.rsplit(".", 1)[-1] in ("k", "v"))


def tracked_modules(model: torch.nn.Module) -> list[str]:
    """The linear layers with a trainable parameter (kronfluence factors nn.Linear only)."""
    names = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and any(p.requires_grad for p in m.parameters())]
    if not names:
        raise UntracError("method=ekfac found no trainable nn.Linear layer: EK-FAC factors linear layers only")
    return names


class EkfacScorer:
    """Factors fit once on the Hessian pool, then dataset-level scores of weighted sets."""

    def __init__(self, inputs: Context, workdir: str):
        if Analyzer is None:
            raise UntracError(MISSING)
        cfg = inputs.method
        if inputs.hessian_pool is None or len(inputs.hessian_pool) == 0:
            raise UntracError("method=ekfac needs a Hessian pool of training examples (none was given)")
        model = inputs.fresh_model()
        conv1d_as_linear(model)  # GPT-2: its attention and MLP layers are Conv1D, which kronfluence cannot track
        unflatten_opt_mlp(model)
        modules = tracked_modules(model)
        named = dict(model.named_modules())
        record_coverage(inputs.counters, model, [p for m in modules for p in named[m].parameters() if p.requires_grad],
                        by=f"EK-FAC: {len(modules)} of {len(leaf_modules(model))} modules")
        generator = torch.Generator(device=inputs.device).manual_seed(inputs.seed)
        self.task = UntracTask(inputs.arch, modules, generator)
        model = prepare_model(model, self.task)
        dtype = torch.promote_types(next(model.parameters()).dtype, torch.float32)  # float64 stays float64
        amp = torch.bfloat16 if inputs.device.type == "cuda" and inputs.dtype == "bfloat16" else None
        self.batch = cfg.per_example_batch
        self.loader = DataLoaderKwargs(collate_fn=collate_weighted(inputs.arch.pad_id))
        self.analyzer = Analyzer(analysis_name="ekfac", model=model, task=self.task,
                                 cpu=inputs.device.type == "cpu", log_level=logging.WARNING,
                                 disable_tqdm=True, output_dir=workdir)
        self.factor_args = FactorArguments(
            strategy="ekfac", use_empirical_fisher=cfg.fisher == "empirical", amp_dtype=amp,
            covariance_max_examples=None, lambda_max_examples=None, activation_covariance_dtype=dtype,
            gradient_covariance_dtype=dtype, per_sample_gradient_dtype=dtype, lambda_dtype=dtype)
        self.score_args = ScoreArguments(
            damping_factor=cfg.damping, amp_dtype=amp, aggregate_query_gradients=True,
            per_sample_gradient_dtype=dtype, precondition_dtype=dtype, score_dtype=dtype)
        pool = WeightedSets([(inputs.hessian_pool, torch.ones(len(inputs.hessian_pool), dtype=torch.float64))])
        self.analyzer.fit_all_factors(factors_name="ekfac", dataset=pool, factor_args=self.factor_args,
                                      per_device_batch_size=cfg.hessian_batch_size, dataloader_kwargs=self.loader,
                                      overwrite_output_dir=True)
        self.modules = modules
        self._runs = 0

    def mean_eigenvalue(self) -> float:
        """Mean corrected eigenvalue over all tracked layers (kronfluence's damping heuristic is 0.1×)."""
        lam = self.analyzer.load_lambda_matrices(factors_name="ekfac")
        total = sum((lam["lambda_matrix"][m] / lam["num_lambda_processed"][m]).sum().item() for m in self.modules)
        return total / sum(lam["lambda_matrix"][m].numel() for m in self.modules)

    def squared_norms(self, parts: list[datasets.Dataset]) -> torch.Tensor:
        """‖g_i‖² over the tracked layers for every example (identity-preconditioned self-influence)."""
        self.analyzer.fit_all_factors(factors_name="identity", dataset=WeightedSets([]),
                                      factor_args=FactorArguments(strategy="identity"), overwrite_output_dir=True)
        ones = WeightedSets([(ds, torch.ones(len(ds), dtype=torch.float64)) for ds in parts])
        args = ScoreArguments(per_sample_gradient_dtype=self.score_args.per_sample_gradient_dtype,
                              precondition_dtype=self.score_args.precondition_dtype,
                              score_dtype=self.score_args.score_dtype, amp_dtype=self.score_args.amp_dtype)
        self.analyzer.compute_self_scores(scores_name="norms", factors_name="identity", train_dataset=ones,
                                          per_device_train_batch_size=self.batch, dataloader_kwargs=self.loader,
                                          score_args=args, overwrite_output_dir=True)
        return self.analyzer.load_self_scores(scores_name="norms")[ALL_MODULES].double()

    def set_scores(self, query: tuple[datasets.Dataset, torch.Tensor],
                   others: list[tuple[datasets.Dataset, torch.Tensor]]) -> list[float]:
        """(Σ_q w_q g_q)ᵀ (G_EKFAC + λI)⁻¹ (Σ_{n∈O} w_n g_n) for every set O of ``others``."""
        items = WeightedSets(others)
        self._runs += 1
        name = f"pairwise{self._runs}"
        self.analyzer.compute_pairwise_scores(
            scores_name=name, factors_name="ekfac", query_dataset=WeightedSets([query]),
            train_dataset=items, per_device_query_batch_size=self.batch, per_device_train_batch_size=self.batch,
            dataloader_kwargs=self.loader, score_args=self.score_args, overwrite_output_dir=True)
        row = self.analyzer.load_pairwise_scores(scores_name=name)[ALL_MODULES].double().reshape(-1)
        return [row[span].sum().item() for span in items.spans()]


def train_weights(scorer: EkfacScorer, inputs: Context) -> dict[str, torch.Tensor]:
    """w_i = 1/N, or 1/(N‖g_i‖) with ``normalize_train`` (mean of unit gradients, paper §5)."""
    weights = {z: torch.full((len(ds),), 1.0 / len(ds), dtype=torch.float64) for z, ds in inputs.train.items()}
    if inputs.method.normalize_train:
        norms = scorer.squared_norms(list(inputs.train.values())).sqrt().clamp_min(1e-30)
        for (z, w), chunk in zip(weights.items(), norms.split([len(ds) for ds in inputs.train.values()])):
            weights[z] = w / chunk
    return weights


@contextmanager
def frozen_heap():
    """kronfluence calls ``gc.collect()`` around every stage (to free accelerator memory); with the
    libraries loaded that is ≈1 s each on a CPU, most of the run time of a small job. Freezing the
    objects that exist beforehand (``gc.freeze``) lets those collections skip them; new objects are
    still collected, and everything is unfrozen afterwards."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def score_ekfac(inputs: Context):
    """EK-FAC influence (module docstring) for every (training dataset Z, test subset Z')."""
    # kronfluence's files live in a temporary folder, dropped afterwards (never the working directory).
    with frozen_heap(), tempfile.TemporaryDirectory(prefix="untrac-ekfac-") as workdir:
        scorer = EkfacScorer(inputs, workdir)
        train = {z: (ds, w) for (z, ds), w in zip(inputs.train.items(), train_weights(scorer, inputs).values())}
        test = {s: (ds, torch.full((len(ds),), 1.0 / len(ds), dtype=torch.float64)) for s, ds in inputs.test.items()}
        n_train, n_test = sum(len(ds) for ds in inputs.train.values()), sum(len(ds) for ds in inputs.test.values())
        scores = {}
        # G is symmetric, so either side may be the preconditioned query: pick the fewer passes over data.
        if len(train) * n_test + n_train <= len(test) * n_train + n_test:
            for z, part in train.items():
                scores.update({(z, s): v for s, v in zip(test, scorer.set_scores(part, list(test.values())))})
        else:
            for s, part in test.items():
                scores.update({(z, s): v for z, v in zip(train, scorer.set_scores(part, list(train.values())))})
        inputs.counters["ekfac_modules"] = len(scorer.modules)
        inputs.counters["ekfac_damping"] = inputs.method.damping
        inputs.counters["ekfac_mean_eigenvalue"] = scorer.mean_eigenvalue()
        log.info("ekfac: %d linear layers, damping %.3g, mean corrected eigenvalue %.3g", len(scorer.modules),
                 inputs.method.damping, inputs.counters["ekfac_mean_eigenvalue"])
    return final_rows({(z, s): scores[(z, s)] for z in inputs.train for s in inputs.test})


register(Method("ekfac", EkfacConfig, score_ekfac, Needs(pool=True)))
