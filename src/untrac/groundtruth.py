"""Leave-dataset-out ground truth (Eq. 1), measured over S training seeds.

One seed's L(Z', θ−Z) − L(Z', θ0) is largely seed noise for small models (DESIGN §1), so with
``groundtruth.seeds=S`` the ground truth of a run is the mean over S seeds, each with its own θ0
and its own θ−Z, with a standard error per cell.

Seeds. Run r has a base seed b_r = seed + r when runs retrain (``data.runs_vary=seed``) and
b_r = seed when runs only resample the scored examples (``runs_vary=sample``: one ground truth,
shared by every run). Its S ground-truth seeds are b_r + 1000·k for k = 0 … S−1.
- k = 0 is the run's own θ0, the model the method is scored on: S = 1 is exactly the single-seed
  ground truth, with the same cache entries.
- The stride keeps the seeds of different runs apart (``runs`` ≤ 1000 is checked) and does not
  depend on ``runs`` or S, so raising either reuses every model already in the cache. (So with
  S ≥ 2, top-level seeds a multiple of 1000 apart share models: ``seed=1000``'s θ0 is ``seed=0``'s
  second ground-truth seed.)
"""

import math
from collections.abc import Sequence
from typing import Callable

import numpy as np
import pandas as pd
import torch

from untrac.config import GROUNDTRUTH_SEED_STRIDE, Config
from untrac.errors import UntracError
from untrac.losses import dataset_loss
from untrac.subsets import every_subset

KEYS = ["run", "train_dataset", "test_subset"]


def truth_seeds(cfg: Config, run: int) -> list[int]:
    """The S training seeds of run ``run``'s ground truth (scheme in the module docstring)."""
    base = cfg.seed + run if cfg.data.runs_vary == "seed" else cfg.seed
    return [base + GROUNDTRUTH_SEED_STRIDE * k for k in range(cfg.groundtruth.seeds)]


MAX_ALL_SUBSETS = 6  # 2^6 = 64 models per seed; beyond, groundtruth.subsets=<M> samples the bank


def bank_subsets(names: Sequence[str], spec: str, keep_fraction: float, seed: int) -> list[frozenset]:
    """The subsets S removed in the bank (DESIGN §2), ∅ first: every subset (``spec="all"``), or
    the K leave-one-out subsets plus ``spec`` = M random subsets that each keep
    round(keep_fraction·K) datasets (at least one removed, at least one kept). The draw depends
    only on ``seed`` and the names, so every ground-truth seed and run shares one bank."""
    k = len(names)
    if spec == "all":
        if k > MAX_ALL_SUBSETS:
            raise UntracError(f"groundtruth.subsets=all needs 2^{k} = {2 ** k} models per seed for {k} training "
                              f"datasets; set groundtruth.subsets=<M> to draw M random subsets")
        return every_subset(names)
    removed = min(max(k - round(keep_fraction * k), 1), k - 1)
    loo = [frozenset()] + [frozenset([z]) for z in names]
    wanted = min(int(spec), math.comb(k, removed) - (k if removed == 1 else 0))
    rng = np.random.default_rng([seed, k, 7919])  # 7919: keeps this stream apart from training's
    drawn: list[frozenset] = []
    while len(drawn) < wanted:
        s = frozenset(np.asarray(names)[np.sort(rng.choice(k, removed, replace=False))].tolist())
        if s not in drawn and s not in loo:
            drawn.append(s)
    return loo + drawn


def trained_models(names: Sequence[str], cfg: Config) -> list[str | tuple | None]:
    """What each ground-truth seed trains, in order: θ0 (None), each θ−Z (its name) and, with
    ``groundtruth.mode=subsets``, each other θ−S of the bank (a tuple of names in dataset order);
    ∅ is θ0 and "every dataset removed" is the initial weights, so neither is trained twice or at all.
    The pipeline and the planner (``untrac.store.needed_specs``) both read this list."""
    models: list[str | tuple | None] = [None]
    if cfg.groundtruth.mode == "none":
        return models
    models += list(names)
    if cfg.groundtruth.mode == "subsets":
        gt = cfg.groundtruth
        models += [tuple(z for z in names if z in s) for s in bank_subsets(names, gt.subsets, gt.keep_fraction, cfg.seed)
                   if 2 <= len(s) < len(names)]
    return models


def removed_key(removed: frozenset | str | None, names: Sequence[str]) -> str | tuple[str, ...] | None:
    """A model's left-out datasets as ``trained``/the store take them: None (θ0), the name (θ−Z, the
    keys the leave-dataset-out models always had), or the names in dataset order (θ−S, |S| ≥ 2)."""
    if removed is None or isinstance(removed, str):
        return removed
    ordered = [z for z in names if z in removed]
    return None if not ordered else ordered[0] if len(ordered) == 1 else tuple(ordered)


def subset_losses(model: torch.nn.Module, test: dict, arch, device: torch.device, batch_size: int,
                dtype: str) -> dict[str, float]:
    """L(Z', θ): the mean example loss of every test subset Z' (DESIGN §2)."""
    return {name: dataset_loss(model, ds, arch, device, batch_size, dtype) for name, ds in test.items()}


def leave_dataset_out(full: dict[str, float], removed: dict[str, dict[str, float]]) -> list[dict]:
    """Eq. 1 for one training seed: I_truth(Z', Z) = L(Z', θ−Z) − L(Z', θ0).

    ``full``: L(Z', θ0) per test subset; ``removed[Z]``: L(Z', θ−Z) per test subset.
    """
    return [{"train_dataset": z, "test_subset": s, "influence": losses[s] - full[s],
             "loss_full": full[s], "loss_removed": losses[s]} for z, losses in removed.items() for s in full]


def mean_over_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """The reported ground truth: mean over seeds per cell, SE = std (ddof=1) / √S (NaN when S = 1)."""
    stats = per_seed.groupby(KEYS, sort=False).influence.agg(["mean", "std", "count"]).reset_index()
    return pd.DataFrame({**{k: stats[k] for k in KEYS}, "influence": stats["mean"],
                         "se": stats["std"] / np.sqrt(stats["count"]), "seeds": stats["count"]})


class GroundTruth:
    """Per-seed Eq. 1 tables of each run; every (seed, model) is evaluated at most once per process.

    ``trained(seed, exclude)`` returns θ0 (``exclude=None``) or θ−Z from the model cache (training
    it if missing); ``evaluate(model)`` returns L(Z', model) per test subset. Runs that share seeds
    (``runs_vary=sample``) reuse the loss tables instead of loading and evaluating the models again.
    """

    def __init__(self, cfg: Config, train_datasets: list[str],
                 trained: Callable[[int, str | None], torch.nn.Module],
                 evaluate: Callable[[torch.nn.Module], dict[str, float]], counters: dict):
        self.cfg, self.train_datasets = cfg, list(train_datasets)
        self.trained, self.evaluate, self.counters = trained, evaluate, counters
        self._losses: dict[tuple[int, str | None], dict[str, float]] = {}

    def losses(self, seed: int, exclude: str | None, model: torch.nn.Module | None = None) -> dict[str, float]:
        """L(Z', θ) for θ0 or θ−Z of ``seed``; ``model`` spares loading a θ0 the caller already holds."""
        key = (seed, exclude)
        if key not in self._losses:
            self._losses[key] = self.evaluate(model if model is not None else self.trained(seed, exclude))
            self.counters["groundtruth_evaluations"] = self.counters.get("groundtruth_evaluations", 0) + 1
        return self._losses[key]

    def per_seed(self, run: int, theta0: torch.nn.Module | None = None) -> pd.DataFrame:
        """Eq. 1 for each seed of ``run``: ``run, seed, train_dataset, test_subset, influence, …``.

        ``theta0``: the run's θ0, i.e. the model of its first seed (already loaded for scoring).
        """
        rows = []
        for k, seed in enumerate(truth_seeds(self.cfg, run)):
            full = self.losses(seed, None, theta0 if k == 0 else None)
            removed = {z: self.losses(seed, z) for z in self.train_datasets}
            rows += [{"run": run, "seed": seed, **row} for row in leave_dataset_out(full, removed)]
        return pd.DataFrame(rows)

    def bank(self, run: int, subsets: list[frozenset], theta0: torch.nn.Module | None = None) -> pd.DataFrame:
        """v(S) = L(Z', θ−S) − L(Z', θ0) for every seed of ``run`` and every S of the bank:
        ``run, seed, removed, test_subset, loss, influence`` (removed: names joined by +, "" for ∅)."""
        rows = []
        for k, seed in enumerate(truth_seeds(self.cfg, run)):
            full = self.losses(seed, None, theta0 if k == 0 else None)
            for s in subsets:
                key = removed_key(s, self.train_datasets)
                losses = full if key is None else self.losses(seed, key)
                name = "+".join(z for z in self.train_datasets if z in s)
                rows += [{"run": run, "seed": seed, "removed": name, "test_subset": t, "loss": losses[t],
                          "influence": losses[t] - full[t]} for t in full]
        return pd.DataFrame(rows)
