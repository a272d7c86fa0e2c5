"""The unlearning schedule (``unlearn.*``) shared by UnTrac and UnTrac-Inv, and its LoRA adapter:
part of the typed schema (``untrac.config.Config.unlearn``), torch-free like the rest of it."""

from dataclasses import dataclass, field
from typing import Any, Optional

from untrac.checks import check as _check, one_of as _one_of, positive as _positive


@dataclass
class LoraConfig:
    """``unlearn.params=lora``: the LoRA adapter that unlearning trains instead of all weights (docs/lora.md).

    ``target_modules``: ``auto`` (peft's choice for the model type: q, v for T5; q_proj, v_proj for
    OPT and Llama) or a list of module names, each matching a module whose name is it or ends in
    ``.<it>``. ``init``: ``kaiming`` (peft's default: A kaiming-uniform, B = 0) or ``orthonormal``
    (A = (r/alpha)·Q with orthonormal Q, B = 0: one SGD step then moves the targeted weights by
    the gradient projected on r input directions, all of it at r = input width; untrac.lora).
    """

    r: int = 8
    alpha: float = 16.0
    target_modules: Any = "auto"
    init: str = "kaiming"

    def __post_init__(self) -> None:
        _check(isinstance(self.r, int) and not isinstance(self.r, bool) and self.r >= 1,
               f"unlearn.lora.r must be a whole number >= 1, got {self.r!r}")
        _positive(self.alpha, "unlearn.lora.alpha")
        targets = self.target_modules
        if isinstance(targets, str) and targets != "auto":
            targets = [targets]
        if targets != "auto":
            targets = list(targets) if isinstance(targets, (list, tuple)) else targets
            _check(isinstance(targets, list) and len(targets) > 0 and all(isinstance(t, str) and t for t in targets),
                   f"unlearn.lora.target_modules must be 'auto' or a list of module names, got {self.target_modules!r}")
        self.target_modules = targets
        _one_of(self.init, ("kaiming", "orthonormal"), "unlearn.lora.init")


@dataclass
class UnlearnConfig:
    """Gradient-ascent schedule shared by UnTrac (forget Z) and UnTrac-Inv (forget Z')."""

    batch_size: int = 1
    epochs: int = 1
    max_steps: Optional[int] = None
    eval_every: int = 32
    eval_batch_size: int = 64
    clip_grad: Optional[float] = None
    # Processes for the independent unlearning runs, each owning its cores (untrac.parallel):
    # auto = one per available core for runs of >= 128 steps; 1 = in-process (the reference).
    workers: str = "auto"
    # full: ascend on every weight (the paper); lora: on a LoRA adapter only (untrac.lora, docs/lora.md)
    params: str = "full"
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        _one_of(self.params, ("full", "lora"), "unlearn.params")
        for key in ("batch_size", "epochs", "max_steps", "eval_every", "eval_batch_size", "clip_grad"):
            _positive(getattr(self, key), f"unlearn.{key}")
        self.workers = str(self.workers)  # Hydra may hand over an int
        _check(self.workers == "auto" or (self.workers.isdigit() and int(self.workers) >= 1),
               f"unlearn.workers must be 'auto' or a whole number >= 1, got {self.workers!r}")
