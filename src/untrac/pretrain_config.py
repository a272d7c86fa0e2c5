"""The pretraining of a stand-in model (``model.pretrain``; ``model=t5_standin``, issue 20): what
corpus, how many steps, at what rate. Torch-free, like the rest of the schema, so a bad value is
refused before anything loads. The values and their sources: conf/model/t5_standin.yaml.
"""

from dataclasses import dataclass

from untrac.checks import check, one_of, positive

CORPORA = ("standin",)  # untrac.data.standin


@dataclass
class PretrainConfig:
    """Pretrain once on ``corpus`` (``pairs`` generated pairs, numbers 0..``n_max``, ``held_out`` of
    the succession facts left out), AdamW at ``lr`` with ``warmup`` steps then a linear decay to
    ``min_lr_frac``·lr, ``steps`` batches of ``batch_size``; ``seed`` seeds corpus and initialisation."""

    corpus: str = "standin"
    pairs: int = 200_000
    n_max: int = 999
    held_out: float = 0.1
    seed: int = 0
    steps: int = 8000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 400
    min_lr_frac: float = 0.1
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        one_of(self.corpus, CORPORA, "model.pretrain.corpus")
        for key in ("pairs", "n_max", "steps", "batch_size", "lr"):
            positive(getattr(self, key), f"model.pretrain.{key}")
        check(0 <= self.held_out < 1, f"model.pretrain.held_out must be in [0, 1), got {self.held_out}")
        if self.n_max > 0 and 0 <= self.held_out < 1:  # else reported above
            check(int((self.n_max + 1) * self.held_out) < self.n_max,
                  f"model.pretrain.held_out={self.held_out} holds out every number up to "
                  f"model.pretrain.n_max={self.n_max}: no succession fact is left to learn")
        check(0 <= self.warmup, f"model.pretrain.warmup must be >= 0, got {self.warmup}")
        check(0 < self.min_lr_frac <= 1, f"model.pretrain.min_lr_frac must be in (0, 1], got {self.min_lr_frac}")
        check(self.weight_decay >= 0, f"model.pretrain.weight_decay must be >= 0, got {self.weight_decay}")
