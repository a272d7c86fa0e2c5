"""The one model store: every trained model (θ0, θ−Z, the bank's θ−S, TracIn checkpoints) is a
``ModelSpec`` with one key, trained, locked, staged and published by ``ModelStore`` on ``Cache``.

The pipeline (``Experiment.trained``), the paper's planner (``untrac.paper.plan``) and the scripts
ask this module for models; nothing else knows how a model's cache key is made. The key fields
are exactly those the pipeline hashed before the store existed (``tests/test_pipeline.py`` pins
two of them), so every cached model is reused.
"""

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch

from untrac.cache import Cache, load_weights, make_key, save_weights
from untrac.config import Config, DataConfig, ModelConfig, TrainConfig
from untrac.data.prepare import data_key
from untrac.groundtruth import trained_models, truth_seeds
from untrac.models import Arch, build_model, model_key
from untrac.optim import training_optimizer
from untrac.train import TrainRun, steps_for, train

log = logging.getLogger(__name__)

Exclude = str | tuple[str, ...] | None  # θ0, θ−Z (a name) or the bank's θ−S (names in dataset order)


def train_mode(cfg: Config) -> str:
    """groundtruth.mode none trains only θ0 and subsets adds models: both train T steps like
    fixed_steps (and share its models)."""
    mode = cfg.groundtruth.mode
    return "fixed_steps" if mode in ("none", "subsets") else mode


@dataclass(frozen=True)
class ModelSpec:
    """What is trained (model, data, training settings, mode), without which datasets (``exclude``),
    from which seed, and whether its TracIn checkpoints are kept too."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    mode: str  # fixed_steps | all_examples
    seed: int
    exclude: Exclude = None
    checkpoints: bool = False

    @property
    def label(self) -> str:
        e = self.exclude
        return "θ0" if e is None else f"θ−{e if isinstance(e, str) else '+'.join(e)}"

    def fields(self) -> dict:
        """The fields the model's cache key hashes (unchanged since before the store: do not edit)."""
        t = self.train
        train_fields = {"steps": t.steps, "batch_size": t.batch_size, "optim": t.optim, "lr": t.lr,
                        "weight_decay": t.weight_decay}
        if t.clip_grad is not None:  # only when set, so that unclipped models keep their cache keys
            train_fields["clip_grad"] = t.clip_grad
        if self.mode == "all_examples":
            train_fields = {**train_fields, "steps": None, "epochs": t.epochs}
        exclude = list(self.exclude) if isinstance(self.exclude, tuple) else self.exclude
        return {"model": model_key(self.model), "data": data_key(self.data), "train": train_fields,
                "mode": self.mode, "seed": self.seed, "exclude": exclude}

    def checkpoint_fields(self) -> dict:
        return {**self.fields(), "checkpoint_every": self.train.checkpoint_every}

    def key(self) -> str:
        """The key of the model and, with ``checkpoints``, of its checkpoints too (one store entry)."""
        return make_key(self.fields()) + (f"+{make_key(self.checkpoint_fields())}" if self.checkpoints else "")


def model_spec(cfg: Config, seed: int, exclude: Exclude = None, checkpoints: bool = False) -> ModelSpec:
    return ModelSpec(cfg.model, cfg.data, cfg.train, train_mode(cfg), seed, exclude, checkpoints)


def needed_specs(cfg: Config, names: Sequence[str], checkpoints: bool) -> list[ModelSpec]:
    """Every model ``run_experiment(cfg)`` looks up, for training datasets ``names``: per run that
    retrains, per ground-truth seed, θ0 and each model of ``groundtruth.trained_models``; the TracIn
    checkpoints (``checkpoints``: the method needs them) of the scored θ0 (the run's first seed)."""
    if cfg.train.steps == 0:
        return []  # θ0 is the given model, nothing is trained
    runs = range(cfg.runs if cfg.data.runs_vary == "seed" else 1)
    excludes = trained_models(list(names), cfg)
    specs = []
    for run in runs:
        seeds = truth_seeds(cfg, run)
        for k, seed in enumerate(seeds if cfg.groundtruth.mode != "none" else seeds[:1]):
            specs += [model_spec(cfg, seed, e, checkpoints and k == 0 and e is None) for e in excludes]
    return specs


@dataclass
class TrainingData:
    """What a model is trained from: its tokenizer, architecture and the named training datasets."""

    tokenizer: object
    arch: Arch
    train: dict[str, datasets.Dataset]


class ModelStore:
    """Trains a ``ModelSpec`` once (under the cache's lock of its model entry), publishes the model
    and its checkpoints atomically, and loads them back."""

    def __init__(self, cache: Cache, device: torch.device, seconds: dict | None = None):
        self.cache, self.device = cache, device
        self.seconds = seconds if seconds is not None else {}

    def path(self, spec: ModelSpec) -> Path:
        return self.cache.path("models", make_key(spec.fields()))

    def _missing(self, spec: ModelSpec) -> tuple[bool, bool]:
        need_model = not self.cache.has("models", make_key(spec.fields()))
        return need_model, spec.checkpoints and not self.cache.has("checkpoints", make_key(spec.checkpoint_fields()))

    def has(self, spec: ModelSpec) -> bool:
        return not any(self._missing(spec))

    def ensure(self, spec: ModelSpec, data: TrainingData) -> bool:
        """Train ``spec`` unless it is stored; whether it was trained now. One process trains a
        model; another asking for it waits on the lock, then finds it stored."""
        if self.has(spec):
            log.info("%s (seed %d): reused from cache %s", spec.label, spec.seed, self.path(spec))
            return False
        with self.cache.hold("models", make_key(spec.fields())):
            need_model, need_ckpts = self._missing(spec)
            if not (need_model or need_ckpts):
                return False
            log.info("%s (seed %d): not in cache, training", spec.label, spec.seed)
            self._train_and_publish(spec, data, need_ckpts)
        return True

    def fresh(self, cfg: ModelConfig, tokenizer, seed: int) -> torch.nn.Module:
        """A model before finetuning: ``cfg``'s initial weights (seeded by ``seed``), or for a pretrained
        stand-in (``cfg.pretrain``) its pretrained weights, pretrained once here and stored."""
        model, _ = build_model(cfg, tokenizer, seed)
        if cfg.pretrain is not None:
            load_weights(model, self.pretrained(cfg, tokenizer) / "model.safetensors")
        return model

    def pretrained(self, cfg: ModelConfig, tokenizer) -> Path:
        """The store entry of ``cfg``'s stand-in (``untrac.pretrain``), keyed by the whole model config;
        built under the entry's lock (a second process waits, then loads it)."""
        from untrac.pretrain import knowledge, pretrain

        def write(tmp: Path) -> None:
            log.info("stand-in %s: not in cache, pretraining (%d steps)", cfg.name, cfg.pretrain.steps)
            start = time.perf_counter()
            model, losses = pretrain(cfg, tokenizer, self.device)
            seconds = time.perf_counter() - start
            self.seconds["pretrain"] = self.seconds.get("pretrain", 0.0) + seconds
            save_weights(model, tmp / "model.safetensors")
            (tmp / "train_losses.json").write_text(json.dumps(losses))
            report = {"seconds": round(seconds, 1), "knowledge": knowledge(model, tokenizer, cfg.pretrain)}
            (tmp / "pretrain.json").write_text(json.dumps(report, indent=1))
            log.info("stand-in pretrained in %.0f s; held-out knowledge %s", seconds, report["knowledge"])

        return self.cache.build("pretrained", {"model": model_key(cfg)}, write)

    def load(self, spec: ModelSpec, tokenizer) -> torch.nn.Module:
        model, _ = build_model(spec.model, tokenizer, spec.seed)
        load_weights(model, self.path(spec) / "model.safetensors")
        return model.to(self.device).eval()

    def train_losses(self, spec: ModelSpec) -> list[float]:
        return json.loads((self.path(spec) / "train_losses.json").read_text())

    def checkpoint_files(self, spec: ModelSpec) -> list[dict]:
        """``step, lr, path`` of each stored checkpoint of ``spec``."""
        path = self.cache.path("checkpoints", make_key(spec.checkpoint_fields()))
        return [{**it, "path": path / it["file"]} for it in json.loads((path / "checkpoints.json").read_text())]

    def staging(self, spec: ModelSpec) -> Path:
        """Where checkpoints wait while their model trains (used only under the model's lock)."""
        return self.cache.root / "staging" / make_key(spec.checkpoint_fields())

    def _train_and_publish(self, spec: ModelSpec, data: TrainingData, with_ckpts: bool) -> None:
        t = spec.train
        removed = {spec.exclude} if isinstance(spec.exclude, str) else set(spec.exclude or ())
        pool = datasets.concatenate_datasets([ds for z, ds in data.train.items() if z not in removed])
        model = self.fresh(spec.model, data.tokenizer, spec.seed)
        optimizer = training_optimizer(model.parameters(), t.optim, t.lr, t.weight_decay)
        staging = self.staging(spec)  # one found here was left by a killed run: we hold the lock
        for stale in staging.parent.glob(f"{staging.name}*"):  # "*": older runs appended their pid
            shutil.rmtree(stale, ignore_errors=True)
        saved = []

        def on_checkpoint(step: int, lr: float, m: torch.nn.Module) -> None:
            staging.mkdir(parents=True, exist_ok=True)
            save_weights(m, staging / f"step{step:07d}.safetensors")
            saved.append({"step": step, "lr": lr, "file": f"step{step:07d}.safetensors"})

        run = TrainRun(steps_for(len(pool), t.batch_size, t.steps, t.epochs, spec.mode), t.batch_size, spec.seed,
                       spec.model.dtype, t.checkpoint_every if with_ckpts else None,
                       on_checkpoint if with_ckpts else None, t.clip_grad, f"{spec.label} (seed {spec.seed})",
                       f"train {spec.label}")
        start = time.perf_counter()
        try:
            losses = train(model, data.arch, pool, optimizer, self.device, run)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            self.seconds["train"] = self.seconds.get("train", 0.0) + time.perf_counter() - start

        def write_model(tmp: Path) -> None:
            save_weights(model, tmp / "model.safetensors")
            (tmp / "train_losses.json").write_text(json.dumps(losses))

        def write_ckpts(tmp: Path) -> None:
            for item in saved:
                shutil.move(staging / item["file"], tmp / item["file"])
            (tmp / "checkpoints.json").write_text(json.dumps(saved, indent=1))

        self.cache.build("models", spec.fields(), write_model)
        if with_ckpts:
            self.cache.build("checkpoints", spec.checkpoint_fields(), write_ckpts)
            shutil.rmtree(staging, ignore_errors=True)

