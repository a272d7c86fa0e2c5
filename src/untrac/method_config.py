"""The attribution methods' config schemas: one dataclass per method, torch-free.

``SCHEMAS`` maps each method name to its schema; ``untrac.run.register_configs`` stores one
ConfigStore node per entry, so composing and checking a config (``method=graddot
method.lissa_iterations=3`` refused while composing) never imports torch or a method module.
The method itself (``untrac.methods.<module>``) registers the same schema with its score function;
``untrac.methods.register`` refuses a method whose schema differs from its entry here.
Adding a method: its schema here (and in ``SCHEMAS``), its module in ``untrac.methods``, and
``conf/method/<name>.yaml``.
"""

from dataclasses import dataclass
from typing import Any

from untrac.checks import check, one_of, positive

HIF_VARIANTS = ("default", "authors")


@dataclass
class MethodConfig:
    """What every attribution method's config has: its name. A method's own settings live in its
    subclass below, so a key of another method is rejected while composing.
    ``Config()`` built in Python holds this bare base, read as the named method's defaults."""

    name: str = "untrac"


@dataclass
class PoolConfig(MethodConfig):
    """Settings of the methods that need a pool of training examples for their curvature (``Needs.pool``)."""

    hessian_examples: int = 256  # the pool the curvature is the mean over (paper §5: 256 training examples)
    hessian_batch_size: int = 16  # chunk of the pool per product (memory only)
    per_example_batch: int = 16  # batch for the gradients being scored
    normalize_train: bool = True  # ĝ_i = g_i/‖g_i‖ (paper §5: "the gradients of training datasets are normalized")
    # λ > 0 added to the curvature (not in the paper): makes it positive definite. The one rule for every
    # pool method; hif_*'s variant=authors runs undamped whatever this says (hif.py), so it needs no 0 here.
    damping: float = 0.01

    def __post_init__(self) -> None:
        for key in ("hessian_examples", "hessian_batch_size", "per_example_batch"):
            positive(getattr(self, key), f"method.{key}")
        check(self.damping > 0, f"method.damping must be > 0 for {self.name} (curvature + damping·I must be "
                                f"positive definite), got {self.damping}")


@dataclass
class GradConfig(MethodConfig):
    """GradDot and TracIn: gradients w.r.t. all model parameters (paper §5 "baseline methods")."""

    per_example_batch: int = 16  # examples per forward/backward batch while accumulating a set's gradient

    def __post_init__(self) -> None:
        positive(self.per_example_batch, "method.per_example_batch")


@dataclass
class GradCosConfig(GradConfig):
    variant: str = "default"  # default: per-example normalisation (paper §4.1) | summed: cosine of set gradients

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of(self.variant, ("default", "summed"), "method.variant")


@dataclass
class HifConfig(PoolConfig):
    """Both inverses: G = the GGN of the mean loss over the pool (``PoolConfig``, paper: 256 examples)."""

    # default: GGN, damped, fixed pool | authors: the paper's baseline as the authors' code runs it
    # (exact Hessian of a fresh pool batch per HVP, no damping; hessian_batch_size is that batch)
    variant: str = "default"

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of(self.variant, HIF_VARIANTS, "method.variant")


@dataclass
class LissaConfig(HifConfig):
    # Paper §5: 10 iterations. With s ≈ 1.1·λ_max and λ = 0.01 the recursion contracts by only
    # 1 − λ/s per step in G's flat directions, so 10 steps are a TRUNCATED Neumann series, not
    # (G + λI)⁻¹: the relative residual it leaves is recorded (counters.hif_solver, summary.md "truncated").
    lissa_iterations: int = 10
    lissa_scale: Any = "auto"  # auto = 1.1·(λ_max + λ), λ_max by Lanczos on G: contracts by construction; or s > 0
    # Lanczos steps for λ_max, all run (an early-stop rule stalled at 105 < 117). 10 and 20 steps gave the same
    # λ_max to 0.01 on four cpu θ0s (synthA runs 0-2: 117.28, 90.83, 113.73; synthB run 0: 104.03), and
    # the recursion contracts for any estimate above (λ_max + λ)/2.2, so 10 (a third of LiSSA's products).
    lanczos_iterations: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self.lissa_iterations, "method.lissa_iterations")
        positive(self.lanczos_iterations, "method.lanczos_iterations")
        number = isinstance(self.lissa_scale, (int, float)) and not isinstance(self.lissa_scale, bool)
        check(self.lissa_scale == "auto" or (number and self.lissa_scale > 0),
              f"method.lissa_scale must be 'auto' or a number > 0, got {self.lissa_scale!r}")


@dataclass
class ArnoldiConfig(HifConfig):
    arnoldi_iterations: int = 25  # n products (paper §5.1; §5.2 pile8: 200, conf/method/hif_arnoldi_pile8.yaml)
    arnoldi_topk: int = 25  # p Ritz pairs kept, largest first (paper §5.1; §5.2 pile8: 100)

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self.arnoldi_iterations, "method.arnoldi_iterations")
        positive(self.arnoldi_topk, "method.arnoldi_topk")
        check(self.arnoldi_topk <= self.arnoldi_iterations,
              "method.arnoldi_topk must not exceed method.arnoldi_iterations")


@dataclass
class EkfacConfig(PoolConfig):
    """Pool (256 training examples), batches, normalisation and damping as hif_* (``PoolConfig``):
    the same (G + λI)⁻¹ target with G approximated by EK-FAC."""

    fisher: str = "sampled"  # labels drawn from the model (true Fisher = GGN) | empirical: the data's labels

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of(self.fisher, ("sampled", "empirical"), "method.fisher")


# Method name -> schema: what ``method=<name>`` composes against (untrac.run.register_configs).
SCHEMAS: dict[str, type[MethodConfig]] = {
    "untrac": MethodConfig,  # UnTrac and UnTrac-Inv take the unlearn.* and optim.* settings
    "untrac_inv": MethodConfig,
    "graddot": GradConfig,
    "gradcos": GradCosConfig,
    "tracin": GradConfig,
    "hif_lissa": LissaConfig,
    "hif_arnoldi": ArnoldiConfig,
    "ekfac": EkfacConfig,
    "tfidf": MethodConfig,  # the text-overlap baselines have nothing to set (untrac.methods.overlap)
    "bm25": MethodConfig,
}
