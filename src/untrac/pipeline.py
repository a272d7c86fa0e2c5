"""The stages of one experiment — train θ0, leave-dataset-out ground truth, score — with no Hydra.

``run_experiment(cfg)`` is what ``python -m untrac.run`` calls after composing the config; tests
and scripts can call it with a ``Config`` built in Python.
"""

import logging
import random
import resource
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch

from untrac.cache import Cache, load_weights
from untrac.checks import before_training
from untrac.config import Config
from untrac.data.prepare import load_task, sample
from untrac.errors import UntracError
from untrac.groundtruth import GroundTruth, bank_subsets, mean_over_seeds, subset_losses, truth_seeds
from untrac.lora import record_lora_coverage
from untrac.methods import Checkpoint, Context, Method, get, registry
from untrac.models import load_tokenizer, model_arch, record_all_weights, resolve_device
from untrac.pieces import PieceStore
from untrac.record import EXAMPLES, INFLUENCE, SUBSETS, TRUTH
from untrac.store import Exclude, ModelSpec, ModelStore, TrainingData, model_spec

log = logging.getLogger(__name__)


@dataclass
class Results:
    influence: pd.DataFrame
    truth: pd.DataFrame  # the S-seed mean ground truth, with its SE
    truth_seeds: pd.DataFrame = field(default_factory=pd.DataFrame)  # Eq. 1 of every seed
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counters: dict = field(default_factory=dict)
    cache_hits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: pd.DataFrame = field(default_factory=pd.DataFrame)  # rank.top_k: the top examples (top_examples)
    subsets: pd.DataFrame = field(default_factory=pd.DataFrame)  # groundtruth.mode=subsets: v(S) of the bank


def top_examples(scores: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k highest-scoring training examples per (method, run, test subset), highest first
    (the shared sign: a high score = the example helped the model on the test subset). ``example``
    is the example's index in its scored dataset here; ``Experiment._keep_examples`` turns it into
    the row number in the user's file where the dataset has one (``data=files``)."""
    ranked = scores.sort_values("score", ascending=False, kind="stable")
    return ranked.groupby(["method", "run", "test_subset"], sort=False).head(k).reset_index(drop=True)


def example_text(tokenizer, row: dict, kind: str) -> str:
    """An example's tokens as text: the input, and for seq2seq pairs " → target" (of ``data=files``:
    the row as the model read it, prompt + separator + target; a chunk of a long row is that chunk)."""
    text = tokenizer.decode(row["input_ids"], skip_special_tokens=True)
    if kind == "seq2seq" and "labels" in row:
        text += " → " + tokenizer.decode([t for t in row["labels"] if t >= 0], skip_special_tokens=True)
    return text


@contextmanager
def timed(seconds: dict, stage: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] += time.perf_counter() - start


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    peak = {"cpu_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        peak["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


class Experiment:
    """Holds what all runs share (device, tokenizer, data) and the cache of trained models."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        before_training(cfg)  # an unusable cache_dir or a missing data file: one line, now
        self.cache = Cache(cfg.cache_dir)
        self.device = resolve_device(cfg.device)
        self.tokenizer = load_tokenizer(cfg.model)
        self.arch = model_arch(cfg.model, self.tokenizer)  # building a model here would load its weights
        self.task = load_task(cfg.data, cfg.testset, self.tokenizer, self.arch, Path(cfg.cache_dir))
        self._check_names()
        self.results = Results(influence=pd.DataFrame(), truth=pd.DataFrame())
        self.store = ModelStore(self.cache, self.device, self.results.seconds)
        self.truth = GroundTruth(cfg, list(self.task.train), self.trained, self.test_losses, self.results.counters)
        gt = cfg.groundtruth
        self.bank = bank_subsets(list(self.task.train), gt.subsets, gt.keep_fraction, cfg.seed) \
            if gt.mode == "subsets" else []
        self._check_batch_sizes()

    def _check_names(self) -> None:
        """A test subset named like a training dataset would make every result row ambiguous (two maps
        are compared by the config; names from a group_column are known only now)."""
        clash = sorted(set(self.task.train) & set(self.task.test))
        if clash:
            name, data, testset = clash[0], self.cfg.data, self.cfg.testset
            test_key = _source_key("testset", "subsets", testset.subsets, testset.group_column, name)
            train_key = _source_key("data", "train", data.train, data.group_column, name)
            raise UntracError(f"{test_key} has the name of training dataset {train_key}: rename one "
                              "(results name both by it)")

    def _check_batch_sizes(self) -> None:
        """A batch larger than the data it draws from is a mistake: say so before any training."""
        cfg, sizes = self.cfg, {z: len(ds) for z, ds in self.task.train.items()}
        if cfg.train.steps == 0:
            return  # nothing is trained
        trains_loo = cfg.groundtruth.mode != "none"  # θ−Z are trained only with a ground truth
        if trains_loo and len(sizes) < 2:
            raise UntracError(f"one training dataset ({', '.join(sizes)}): leaving it out leaves nothing to train "
                              "on, so there is no leave-dataset-out ground truth; give two or more datasets or "
                              "set groundtruth.mode=none")
        smallest_pool = sum(sizes.values()) - (max(sizes.values()) if trains_loo and len(sizes) > 1 else 0)
        if self.bank:  # the bank's smallest pool that is trained at all (θ−D is the initial weights)
            smallest_pool = min(sum(n for z, n in sizes.items() if z not in s) for s in self.bank if len(s) < len(sizes))
        if cfg.train.batch_size > smallest_pool:
            what = "smallest leave-dataset-out training set" if trains_loo else "training set"
            raise UntracError(f"train.batch_size={cfg.train.batch_size} is larger than the {what} "
                              f"({smallest_pool} examples)")
    # -- training (θ0, θ−Z and the bank's θ−S: untrac.store) -----------------------------------
    def spec(self, seed: int, exclude: Exclude = None, checkpoints: bool = False) -> ModelSpec:
        return model_spec(self.cfg, seed, exclude, checkpoints)

    def trained(self, seed: int, exclude: Exclude = None, checkpoints: bool = False) -> torch.nn.Module:
        """θ0 (``exclude=None``), θ−Z (a name) or θ−S (a tuple of names, the bank), from the store or
        trained now (and stored). θ−D, every dataset removed, is the initial weights (DESIGN §2)."""
        if self.cfg.train.steps == 0:
            return self._given_model(seed, exclude, checkpoints)
        if isinstance(exclude, tuple) and set(exclude) == set(self.task.train):
            return self.store.fresh(self.cfg.model, self.tokenizer, seed).to(self.device).eval()
        spec = self.spec(seed, exclude, checkpoints)
        if not self.store.ensure(spec, TrainingData(self.tokenizer, self.arch, self.task.train)):
            self.results.cache_hits["models"] += 1
        return self.store.load(spec, self.tokenizer)

    def _given_model(self, seed: int, exclude: str | None, checkpoints: bool) -> torch.nn.Module:
        """train.steps=0: θ0 is the given model itself, untouched and not copied into the cache."""
        if exclude is not None:
            raise UntracError(f"train.steps=0 trains nothing, so θ−{exclude} would equal θ0: set groundtruth.mode=none "
                              "to skip the leave-dataset-out ground truth, or train.steps=<n> to finetune")
        if checkpoints:
            raise UntracError(f"method={self.cfg.method.name} needs training checkpoints, but train.steps=0 trains "
                              "nothing: give train.steps=<n> or choose another method")
        return self.store.fresh(self.cfg.model, self.tokenizer, seed).to(self.device).eval()

    def checkpoints(self, seed: int) -> list[Checkpoint]:
        return [Checkpoint(it["step"], it["lr"], lambda model, f=it["path"]: load_weights(model, f))
                for it in self.store.checkpoint_files(self.spec(seed, None, checkpoints=True))]

    # -- ground truth (Eq. 1, over groundtruth.seeds seeds: untrac.groundtruth) ---------------
    def test_losses(self, model) -> dict[str, float]:
        return subset_losses(model, self.task.test, self.arch, self.device, self.cfg.unlearn.eval_batch_size,
                             self.cfg.model.dtype)

    # -- scoring -----------------------------------------------------------------------------
    @property
    def method(self) -> Method:
        return get(self.cfg.method.name)

    def context(self, theta0, train_seed: int, sample_seed: int, scored: dict) -> Context:
        """What the method declared it needs (``Method.needs``), and nothing it did not."""
        cfg, method = self.cfg, self.method
        settings, needs = method.settings(cfg.method), method.needs
        context = Context(theta0=theta0, arch=self.arch, device=self.device, train=scored, test=self.task.test,
                          method=settings, seed=sample_seed, dtype=cfg.model.dtype, counters=self.results.counters)
        if needs.unlearning:
            context.optim, context.unlearn = cfg.optim, cfg.unlearn
            context.store = PieceStore(self.cache, {"theta0": self.spec(train_seed).key()})
        if needs.pool:
            context.hessian_pool = self.hessian_pool(settings.hessian_examples, sample_seed)
        if needs.checkpoints:
            context.checkpoints = self.checkpoints(train_seed)
        if needs.examples and cfg.rank.top_k:
            context.examples = []
        if needs.texts:
            context.texts = {"train": self.texts(scored), "test": self.texts(self.task.test)}
        return context

    def texts(self, sets: dict[str, datasets.Dataset]) -> dict[str, list[str]]:
        return {name: [example_text(self.tokenizer, row, self.arch.kind) for row in ds] for name, ds in sets.items()}

    def hessian_pool(self, size: int, sample_seed: int) -> datasets.Dataset:
        """The curvature methods' pool: ``size`` examples drawn from all training datasets together."""
        return sample(datasets.concatenate_datasets(list(self.task.train.values())), size, sample_seed)

    def score(self, theta0, train_seed: int, sample_seed: int, run: int = 0) -> pd.DataFrame:
        cfg = self.cfg
        scored = {z: sample(ds, cfg.score.samples_per_dataset, sample_seed + i)
                  for i, (z, ds) in enumerate(self.task.train.items())}
        context = self.context(theta0, train_seed, sample_seed, scored)
        influence = self.method.score(context)
        record_all_weights(context.counters, theta0)  # unless the method recorded its own share (EK-FAC, LoRA)
        if context.examples:
            self._keep_examples(pd.concat(context.examples, ignore_index=True), scored, run)
        return influence

    def _keep_examples(self, scores: pd.DataFrame, scored: dict, run: int) -> None:
        top = top_examples(scores.assign(method=self.cfg.method.name, run=run), self.cfg.rank.top_k)
        rows = [scored[z][int(i)] for z, i in zip(top.train_dataset, top.example)]
        top["text"] = [example_text(self.tokenizer, row, self.arch.kind) for row in rows]
        # data=files: the row's 1-based number in the user's file (untrac.data.reading), not an index
        top["example"] = [row.get("row", i) for row, i in zip(rows, top.example)]
        self.results.examples = pd.concat([self.results.examples, top[list(EXAMPLES.columns)]], ignore_index=True)

    def run(self, run: int) -> None:
        cfg = self.cfg
        train_seed = truth_seeds(cfg, run)[0]  # seed + run, or seed when runs only resample (runs_vary)
        sample_seed = cfg.seed + run
        self.method.settings(cfg.method)  # a config of the wrong type fails here, before any training
        needs = self.method.needs
        theta0 = self.trained(train_seed, checkpoints=needs.checkpoints)
        if cfg.unlearn.params == "lora" and needs.unlearning:
            record_lora_coverage(theta0, cfg.unlearn.lora, self.results.counters)  # a bad target fails here
        if cfg.rank.top_k and not needs.examples and run == 0:
            log.warning("rank.top_k: method=%s scores whole datasets only; per-example scores come from %s",
                        cfg.method.name, ", ".join(n for n, m in registry().items() if m.needs.examples))
        truth = cfg.groundtruth.mode != "none"  # none: no leave-dataset-out models, influences (rankings) only
        if truth:
            with timed(self.results.seconds, "groundtruth_total"):
                per_seed = self.truth.per_seed(run, theta0)
                if cfg.groundtruth.mode == "subsets":
                    bank = self.truth.bank(run, self.bank, theta0)
                    self.results.subsets = pd.concat([self.results.subsets, bank], ignore_index=True)
        with timed(self.results.seconds, "score"):
            influence = self.score(theta0, train_seed, sample_seed, run).assign(method=cfg.method.name, run=run)
        self.results.influence = pd.concat([self.results.influence, influence], ignore_index=True)
        if not truth:
            return
        self.results.truth_seeds = pd.concat([self.results.truth_seeds, per_seed], ignore_index=True)
        self.results.truth = pd.concat([self.results.truth, mean_over_seeds(per_seed)], ignore_index=True)


def _source_key(group: str, key: str, named: dict, column: str | None, name: str) -> str:
    """The setting a dataset's name came from: ``data.train.news`` or ``data.path (source=news)``."""
    if name in named:
        return f"{group}.{key}.{name}"
    return f"{group}.path ({column}={name})" if column else f"{group} {name!r}"


def run_experiment(cfg: Config) -> Results:
    # Hydra's basic launcher runs every job of a sweep in this one process: reset the global state.
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    exp = Experiment(cfg)
    for run in range(cfg.runs):
        log.info("run %d/%d", run + 1, cfg.runs)
        exp.run(run)
    exp.results.counters["peak_memory"] = peak_memory_mb(exp.device)
    exp.results.truth = exp.results.truth.reindex(columns=list(TRUTH.columns))
    exp.results.influence = exp.results.influence[list(INFLUENCE.columns)]
    exp.results.subsets = exp.results.subsets.reindex(columns=list(SUBSETS.columns))
    return exp.results
