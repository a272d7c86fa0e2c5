"""LoRA unlearning (``unlearn.params=lora``): gradient ascent on a peft LoRA adapter, not on all weights.

W_eff = W + s·B·A with s = alpha/r, A: r×d_in, B: d_out×r, and B = 0 at the start, so the adapted
model *is* θ0 until the first step. Let G = ∂L/∂W_eff. Then ∂L/∂B = s·G·Aᵀ and ∂L/∂A = s·Bᵀ·G = 0
at B = 0, so the first SGD ascent step (lr η) moves only B, by η·s·G·Aᵀ, and the effective weight by

    ΔW_eff = s·ΔB·A = η·s²·G·AᵀA                                   (exactly, for that one step)

against η·G for full unlearning of W. ``init=orthonormal`` takes A = Q/s with Q's rows orthonormal
(Qᵀ's at r > d_in), so s²·AᵀA = QᵀQ is the projector on r input directions and, at r ≥ d_in, the
identity: one SGD step of LoRA then equals full unlearning restricted to the targeted weights (the
paper's §4.3 single-step limit; tests/test_lora.py). From step 2 on A moves too: W_eff then
gains terms like s·B·ΔA = η³·s²·G₁G₁ᵀG₂, a departure of relative size ~(η·s·‖G‖)².
peft's default (``init=kaiming``: A kaiming-uniform, B = 0) gives E[s²·AᵀA] = s²·r/(3·d_in)·I
instead: the same direction on average, a smaller step.

The base weights are shared with θ0, never copied (at 7B a copy is 27 GB in fp32) and never updated: only
adapter parameters require a gradient and reach the optimizer. The adapter lives in a structural
copy of θ0 that is dropped after each unlearned set (docs/lora.md).
"""

import contextlib
import copy
import warnings

import torch
from transformers.pytorch_utils import Conv1D

from untrac.config import LoraConfig, UnlearnConfig
from untrac.errors import UntracError
from untrac.models import leaf_modules, record_coverage


def sharing_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module tree whose parameters ARE the original's (no weight memory): swapping
    or wrapping its submodules (fused activations, LoRA layers) leaves ``model`` untouched."""
    return copy.deepcopy(model, memo={id(p): p for p in model.parameters()})


# What peft adapts as a linear layer: nn.Linear, and GPT-2's Conv1D (a linear layer storing Wᵀ, which
# peft adapts with fan_in_fan_out=True).
LINEAR = (torch.nn.Linear, Conv1D)


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith(f".{target}")  # peft's rule for a list of names


def target_modules(model: torch.nn.Module, cfg: LoraConfig) -> list[str]:
    """The module names to adapt (``auto``: peft's choice for the model type), checked to match a
    linear layer of ``model``; otherwise an error naming the patterns and what is there."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING  # peft loads in ~5 s: only when used

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if cfg.target_modules == "auto":
        if model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
            raise UntracError(f"unlearn.lora.target_modules=auto knows no default for model type {model_type!r}: "
                              f"give unlearn.lora.target_modules=[...] (linear layers: {_available(model)})")
        targets = list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])
    else:
        targets = list(cfg.target_modules)
    linear = [name for name, m in model.named_modules() if isinstance(m, LINEAR)]
    unmatched = [t for t in targets if not any(_matches(name, t) for name in linear)]
    if unmatched:
        raise UntracError(f"unlearn.lora.target_modules: no linear layer of the {model_type or 'given'} model matches "
                          f"{unmatched} (linear layers: {_available(model)})")
    return targets


def record_lora_coverage(theta0: torch.nn.Module, cfg: LoraConfig, counters: dict) -> list[str]:
    """``target_modules`` (so a target matching nothing fails before any training), and the share of
    θ0's parameters the adapter moves (the targeted weights; biases stay θ0's) into ``counters``."""
    targets = target_modules(theta0, cfg)
    adapted = [m for name, m in theta0.named_modules()
               if isinstance(m, LINEAR) and any(_matches(name, t) for t in targets)]
    record_coverage(counters, theta0, [m.weight for m in adapted],
                    by=f"LoRA (r={cfg.r}): the weights of {len(adapted)} of {len(leaf_modules(theta0))} modules")
    return targets


def _available(model: torch.nn.Module, most: int = 12) -> str:
    """The distinct last parts of the linear layers' names: what target_modules can name."""
    leaves = dict.fromkeys(name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, LINEAR))
    shown = list(leaves)[:most]
    return ", ".join(shown) + (", ..." if len(leaves) > most else "") if shown else "none"


def _orthonormal_a(a: torch.nn.Linear, scaling: float, generator: torch.Generator) -> None:
    """A = Q/s with orthonormal rows (r ≤ d_in) or columns (r ≥ d_in): s²·AᵀA is a projector, I at full rank."""
    r, d_in = a.weight.shape
    gauss = torch.randn(max(r, d_in), min(r, d_in), generator=generator, dtype=torch.float64)
    q = torch.linalg.qr(gauss).Q  # max×min with orthonormal columns
    q = q if r >= d_in else q.T
    with torch.no_grad():
        a.weight.copy_(q / scaling)


def with_adapter(model: torch.nn.Module, cfg: LoraConfig, seed: int) -> torch.nn.Module:
    """``model`` wrapped by peft with a fresh LoRA adapter (dropout 0, no bias); only the adapter
    trains. Its random A is drawn from ``seed``, so a run is reproducible (and its piece cacheable)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = target_modules(model, cfg)
    conv1d = [m for name, m in model.named_modules()
              if isinstance(m, Conv1D) and any(_matches(name, t) for t in targets)]
    config = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, target_modules=targets, lora_dropout=0.0, bias="none",
                            init_lora_weights=True, fan_in_fan_out=bool(conv1d))
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # peft draws A on the CPU
        # peft 0.21 asks transformers 5 a deprecated question; nothing the user can act on.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(seed)
        wrapped = get_peft_model(model, config)
    if cfg.init == "orthonormal":
        generator = torch.Generator().manual_seed(seed)
        for module in wrapped.modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                _orthonormal_a(module.lora_A["default"], module.scaling["default"], generator)
    return wrapped


@contextlib.contextmanager
def adapted(theta0: torch.nn.Module, cfg: LoraConfig, seed: int):
    """A LoRA-wrapped structural copy of ``theta0`` (weights shared); on exit the adapter is
    discarded and θ0's ``requires_grad`` flags (which peft clears) are restored."""
    flags = [(p, p.requires_grad) for p in theta0.parameters()]
    try:
        yield with_adapter(sharing_copy(theta0), cfg, seed)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def unlearnable(theta0: torch.nn.Module, cfg: UnlearnConfig, seed: int):
    """What one unlearning run ascends on: a full copy of θ0 (``unlearn.params=full``) or θ0's
    weights under a fresh LoRA adapter (``lora``); either is gone after the run."""
    if cfg.params == "lora":
        with adapted(theta0, cfg.lora, seed) as model:
            yield model
    else:
        yield copy.deepcopy(theta0)
