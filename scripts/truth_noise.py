"""How reproducible is the leave-dataset-out ground truth (Eq. 1) of a preset?

For one config and a list of training seeds: train θ0 and every θ−Z per seed (cached, so reruns
are cheap), evaluate Eq. 1 on one or more test sets from the same models, write the per-seed
ground-truth table to CSV, then compare INDEPENDENT ground truths: for S = 1..⌊n/2⌋, two
disjoint groups of S seeds each, the mean GT of one group against the mean of the other
(Pearson and Spearman over the training datasets, per test subset, averaged over subsets, then
over all or up to --max-splits disjoint splits). Also the variance share of the largest training
dataset: per subset, max_z (g_z − ḡ)² / Σ_z (g_z − ḡ)², averaged over subsets (on the all-seed
mean GT, with a 90 % bootstrap interval over seeds, and on single seeds) — near 1 means one dataset
carries the whole ground truth. And the all-seed mean GT standardised as Table 2 prints it, with the
training datasets ranked: whether it has the paper's shape.

  PYTHONPATH=src python scripts/truth_noise.py train --label synthA_default --seeds 0-5 \
      --out outputs/truth/synthA_default.csv -- data=synthA cache_dir=outputs/truth_cache
  PYTHONPATH=src python scripts/truth_noise.py train --label pile8 --seeds 0-5 \
      --testsets toxigen,winobias,truthfulqa --out x.csv -- experiment=pile8 testset.per_subset=256
  PYTHONPATH=src python scripts/truth_noise.py analyse x.csv [y.csv ...]

Train losses (first/last 10% mean) and the wall time of every training are stored beside the
GT rows (in <out>.train.csv): they are what a preset costs and whether it learns its tasks.
"""

import argparse
import itertools
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

log = logging.getLogger("truth_noise")


# -- configs and training: through the package (untrac.paper.plan composes, untrac.store trains) ----
def compose(overrides: list[str]):
    """The typed Config that ``python -m untrac.run <overrides>`` would run."""
    from untrac.paper.plan import compose_run

    return compose_run(overrides)


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    return seeds


def train_losses(exp, seed: int, exclude) -> tuple[float, float]:
    """Mean train loss over the first and the last 10% of steps of one stored model."""
    losses = np.asarray(exp.store.train_losses(exp.spec(seed, exclude)), dtype=float)
    k = max(1, len(losses) // 10)
    return float(losses[:k].mean()), float(losses[-k:].mean())


def checkpoint_states(exp, seed: int, exclude) -> dict[int, Path]:
    """Step -> state file of the checkpoints of one model (θ0 or θ−Z): from the store, or, for a
    model still training, the checkpoints it has staged so far."""
    spec = exp.spec(seed, exclude, checkpoints=True)
    if exp.store.has(spec):
        return {it["step"]: it["path"] for it in exp.store.checkpoint_files(spec)}
    staging = exp.store.staging(spec)  # <key> (<key>-<pid> before the cache had locks)
    staged = staging.parent.glob(f"{staging.name}*/step*.safetensors")
    # a file written in the last seconds may be half-written
    return {int(f.stem[4:]): f for f in staged if time.time() - f.stat().st_mtime > 10}


def truth_at_checkpoints(exp, seed: int) -> pd.DataFrame:
    """Eq. 1 at every checkpoint step k: L(Z', θ−Z@k) − L(Z', θ0@k).

    Training uses a constant learning rate and a seeded batch stream, so the model at step k of a
    T-step run is the k-step model: one long run measures every shorter preset too.
    """
    from untrac.cache import load_weights
    from untrac.models import build_model

    def losses_at(exclude) -> dict[int, dict[str, float]]:
        out = {}
        for step, file in checkpoint_states(exp, seed, exclude).items():
            if step not in common:
                continue
            model, _ = build_model(exp.cfg.model, exp.tokenizer, seed)
            load_weights(model, file)
            out[step] = exp.test_losses(model.to(exp.device).eval())
        return out

    # only the steps every model of this seed has reached (models still training have fewer)
    common = set.intersection(*(set(checkpoint_states(exp, seed, z)) for z in [None, *exp.task.train]))
    base = {k: v for k, v in losses_at(None).items() if k in common}
    rows = []
    for z in exp.task.train:
        for step, loo in losses_at(z).items():
            if step not in common:
                continue
            rows += [{"step": step, "train_dataset": z, "test_subset": s, "influence": loo[s] - base[step][s]}
                     for s in loo]
    return pd.DataFrame(rows)


def train_only(overrides: list[str], seeds: list[int], model: str, checkpoints: bool) -> None:
    """Train (and cache) one model per seed: θ0 (``model=theta0``) or θ−Z; lets the models of one
    seed train in parallel processes, a later ``train`` call then finds them all in the cache."""
    import torch

    from untrac.pipeline import Experiment

    cfg = compose(overrides)
    torch.set_num_threads(cfg.threads or 1)
    exp = Experiment(cfg)
    for seed in seeds:
        exp.trained(seed, exclude=None if model == "theta0" else model, checkpoints=checkpoints)


def train_and_measure(args: argparse.Namespace) -> None:
    """``train``: per seed, θ0 and every θ−Z from the store, then Eq. 1 on each test set (``args``: the CLI's)."""
    import torch

    from untrac.groundtruth import leave_dataset_out
    from untrac.pipeline import Experiment

    label, overrides, seeds, testsets = args.label, args.overrides, parse_seeds(args.seeds), args.testsets.split(",")
    out, checkpoints, eval_only = args.out, args.checkpoints, args.eval_only
    out.parent.mkdir(parents=True, exist_ok=True)
    train_out = out.with_suffix(".train.csv")
    gt_rows, train_rows = [], []
    for seed in seeds:
        for i, testset in enumerate(testsets):
            cfg = compose(overrides + ([f"testset={testset}"] if testset != "synthetic" else []))
            torch.set_num_threads(cfg.threads or 1)
            exp = Experiment(cfg)
            # θ0 and θ−Z do not depend on the test set: the first test set trains, the others reuse.
            for z in [] if eval_only else [None] + list(exp.task.train):
                trained_now = not exp.store.has(exp.spec(seed, z, checkpoints))
                start, cpu_start = time.perf_counter(), time.process_time()
                exp.trained(seed, exclude=z, checkpoints=checkpoints)
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                if i == 0:
                    first, last = train_losses(exp, seed, z)
                    train_rows.append({"label": label, "seed": seed, "exclude": z or "θ0",
                                       "steps": cfg.train.steps,
                                       "seconds": round(seconds, 2) if trained_now else np.nan,
                                       # CPU seconds: the cost on a free core when the machine is shared
                                       "cpu_seconds": round(cpu, 2) if trained_now else np.nan,
                                       "loss_first10": first, "loss_last10": last})
            start = time.perf_counter()
            if checkpoints:
                truth = truth_at_checkpoints(exp, seed)
                if not truth.empty:
                    truth = truth.assign(label=label + "@" + truth.step.astype(str)).drop(columns="step")
            elif eval_only and not all(exp.store.has(exp.spec(seed, z)) for z in [None, *exp.task.train]):
                log.info("%s seed %d: not every model is in the cache, skipped (--eval-only)", label, seed)
                continue
            else:
                full = exp.truth.losses(seed, None)  # Eq. 1 of this one seed (GroundTruth caches the losses)
                removed = {z: exp.truth.losses(seed, z) for z in exp.task.train}
                truth = pd.DataFrame(leave_dataset_out(full, removed)).assign(label=label)
            if truth.empty:
                log.info("%s seed %d: no step that every model has reached yet", label, seed)
                continue
            log.info("%s seed %d %s: GT in %.1fs (incl. evaluation)", label, seed, testset,
                     time.perf_counter() - start)
            gt_rows.append(truth.assign(seed=seed, testset=testset))
        if gt_rows:
            pd.concat(gt_rows, ignore_index=True).to_csv(out, index=False)  # after every seed: partial is usable
        if train_rows:
            pd.DataFrame(train_rows).to_csv(train_out, index=False)
        log.info("%s: seed %d done, %s written", label, seed, out)


# -- analysis -------------------------------------------------------------------------------------
def disjoint_splits(seeds: list[int], size: int, max_splits: int, rng: np.random.Generator):
    """Unordered pairs of disjoint seed groups of ``size`` each (all, or a random ``max_splits``):
    the balanced halves (``untrac.metrics.half_splits``) of every 2·size seeds, listed when there are at
    most ``max_splits`` of them, else drawn (26 seeds in groups of 13 have 5.2 million: listing them
    first took 22 GB)."""
    from untrac.metrics import half_splits

    total = math.comb(len(seeds), 2 * size) * math.comb(2 * size, size) // 2
    if total <= max_splits:
        return [pair for group in itertools.combinations(seeds, 2 * size) for pair in half_splits(list(group), 10**9)]
    drawn: dict[tuple, None] = {}  # insertion-ordered: the same rng gives the same splits
    while len(drawn) < max_splits:
        chosen = [int(s) for s in rng.permutation(seeds)[: 2 * size]]
        a, b = tuple(sorted(chosen[:size])), tuple(sorted(chosen[size:]))
        drawn[min(a, b), max(a, b)] = None
    return list(drawn)


def largest_share(vector: np.ndarray) -> float:
    """Share of Σ (g − ḡ)² carried by the single largest term: 1/n (even) … 1 (one point)."""
    dev = (vector - vector.mean()) ** 2
    return float(dev.max() / dev.sum()) if dev.sum() > 0 else np.nan


def share_interval(cube: np.ndarray, rng: np.random.Generator, draws: int = 2000) -> tuple[float, float]:
    """90 % bootstrap interval of the mean GT's largest share (``cube[seed, subset, dataset]``), the
    seeds resampled with replacement: at 16-36 seeds it is about ±0.07 wide, so a share near a bound
    needs its interval, not its point. Its own generator: the splits drawn stay those of before."""
    picks = rng.integers(0, len(cube), size=(draws, len(cube)))
    shares = [np.nanmean([largest_share(v) for v in cube[pick].mean(0)]) for pick in picks]
    return float(np.nanpercentile(shares, 5)), float(np.nanpercentile(shares, 95))


def complete_seeds(frame: pd.DataFrame) -> list[int]:
    """Seeds with every (dataset, subset) cell: a seed still being written is left out."""
    cells = frame.groupby("seed").size()
    return sorted(cells[cells == cells.max()].index)


def agreement(table: pd.DataFrame, max_splits: int = 200) -> list[dict]:
    """Rows (label, testset, S, splits, pearson, spearman, share...) for one label's GT table."""
    rng = np.random.default_rng(0)
    rows = []
    for (label, testset), frame in table.groupby(["label", "testset"], sort=False):
        frame = frame[frame.seed.isin(complete_seeds(frame))]
        # cube[seed, subset, dataset]
        wide = frame.pivot_table(index=["seed", "test_subset"], columns="train_dataset", values="influence")
        seeds = sorted(frame.seed.unique())
        subsets = sorted(frame.test_subset.unique())
        cube = np.stack([wide.loc[s].loc[subsets].to_numpy() for s in seeds])
        mean_all = cube.mean(0)
        share_mean = np.nanmean([largest_share(v) for v in mean_all])
        share_single = np.nanmean([largest_share(v) for seed_m in cube for v in seed_m])
        share_lo, share_hi = share_interval(cube, np.random.default_rng(1)) if len(seeds) > 1 else (np.nan, np.nan)
        spread = float(np.mean(cube.std(0, ddof=1))) if len(seeds) > 1 else np.nan
        for size in range(1, len(seeds) // 2 + 1):
            pr, sr = [], []
            for a, b in disjoint_splits(list(range(len(seeds))), size, max_splits, rng):
                ga, gb = cube[list(a)].mean(0), cube[list(b)].mean(0)
                with np.errstate(all="ignore"):
                    pr.append(np.nanmean([stats.pearsonr(x, y)[0] for x, y in zip(ga, gb)]))
                    sr.append(np.nanmean([stats.spearmanr(x, y)[0] for x, y in zip(ga, gb)]))
            rows.append({"label": label, "testset": testset, "seeds": len(seeds), "subsets": len(subsets),
                         "S": size, "splits": len(pr), "pearson": np.nanmean(pr), "spearman": np.nanmean(sr),
                         "spearman_min": np.nanmin(sr), "share_mean_gt": share_mean,
                         "share_lo90": share_lo, "share_hi90": share_hi, "share_single_seed": share_single,
                         "gt_abs_mean": float(np.abs(mean_all).mean()),
                         "seed_sd": spread})
    return rows


def standardised_means(table: pd.DataFrame) -> list[dict]:
    """Per (label, testset): the all-seed mean ground truth as Table 2 reports it (mean over seeds and
    test subsets, z-scored across the training datasets by ``untrac.metrics.standardize``, the order of
    ``standardized_influence``), in the datasets' own order, the same mean in nats, and the datasets
    ranked from most to least helpful. A NaN influence makes its mean NaN, as Table 2 does."""
    from untrac.metrics import standardize

    rows = []
    for (label, testset), frame in table.groupby(["label", "testset"], sort=False):
        frame = frame[frame.seed.isin(complete_seeds(frame))]
        # complete seeds: every (seed, subset) cell once, so the row mean is the mean over seeds, then subsets
        nats = frame.groupby("train_dataset", sort=False).influence.agg(lambda v: v.mean(skipna=False))
        z = standardize(nats)
        rows.append({"label": label, "testset": testset, "seeds": frame.seed.nunique(),
                     "standardised": "(" + ", ".join(f"{v:.2f}" for v in z) + ")",
                     "nats": "(" + ", ".join(f"{v:.3f}" for v in nats) + ")",
                     "ranking": " > ".join(z.sort_values(ascending=False).index)})
    return rows


def predicted(table: pd.DataFrame, sizes=(1, 2, 3, 4, 6, 8), draws: int = 10000) -> list[dict]:
    """Agreement of two independent S-seed means PREDICTED from the seeds at hand (any n >= 2).

    Each seed's GT vector is centred over the training datasets (a shift common to every Z, e.g.
    θ0's own noise, moves no correlation); the mean over seeds stands for the signal, and the
    seeds' residuals (scaled by sqrt(n/(n-1))) are resampled with replacement as the noise of
    one seed, keeping its correlation across datasets. Uses the measured mean as the truth, so it
    is optimistic when n is small (the mean still carries noise/n).
    """
    rng = np.random.default_rng(0)
    rows = []
    for (label, testset), frame in table.groupby(["label", "testset"], sort=False):
        frame = frame[frame.seed.isin(complete_seeds(frame))]
        wide = frame.pivot_table(index=["seed", "test_subset"], columns="train_dataset", values="influence")
        seeds, subsets = sorted(frame.seed.unique()), sorted(frame.test_subset.unique())
        if len(seeds) < 2:
            continue
        cube = np.stack([wide.loc[s].loc[subsets].to_numpy() for s in seeds])
        cube = cube - cube.mean(axis=2, keepdims=True)
        signal = cube.mean(0)
        resid = (cube - signal) * np.sqrt(len(seeds) / (len(seeds) - 1))
        noise_var = float(resid.var(axis=0, ddof=0).mean())
        signal_var = float(signal.var(axis=1, ddof=1).mean())
        for size in sizes:
            pr, sr = [], []
            for _ in range(draws // 10):
                pick = rng.integers(0, len(seeds), size=(2, size))
                ga = signal + resid[pick[0]].mean(0)
                gb = signal + resid[pick[1]].mean(0)
                with np.errstate(all="ignore"):
                    pr.append(np.nanmean([stats.pearsonr(x, y)[0] for x, y in zip(ga, gb)]))
                    sr.append(np.nanmean([stats.spearmanr(x, y)[0] for x, y in zip(ga, gb)]))
            rows.append({"label": label, "testset": testset, "seeds": len(seeds), "S": size,
                         "pred_pearson": np.nanmean(pr), "pred_spearman": np.nanmean(sr),
                         "signal_var": signal_var, "noise_var_1seed": noise_var})
    return rows


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train θ0/θ−Z per seed and write the per-seed GT CSV")
    tr.add_argument("--label", required=True)
    tr.add_argument("--seeds", default="0-5", help="e.g. 0-5 or 0,2,4")
    tr.add_argument("--testsets", default="synthetic", help="comma list; pile8: toxigen,winobias,truthfulqa")
    tr.add_argument("--out", type=Path, required=True)
    tr.add_argument("--checkpoints", action="store_true",
                    help="also the GT at every train.checkpoint_every steps (labels <label>@<step>)")
    tr.add_argument("--eval-only", action="store_true",
                    help="train nothing: GT of the seeds whose models are all cached (with --checkpoints: "
                         "at the steps every model has reached)")
    tr.add_argument("--only", default=None, help="train just this model per seed (theta0 or a dataset name), no GT")
    tr.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    an = sub.add_parser("analyse", help="agreement of disjoint seed groups from per-seed GT CSVs")
    an.add_argument("csv", nargs="+", type=Path)
    an.add_argument("--max-splits", type=int, default=200)
    an.add_argument("--out", type=Path, default=None, help="write the summary CSV here too")
    parser.add_argument("--start-at", default=None, help="HH:MM: import everything, then wait until then "
                        "(a starved shared machine can take minutes just to import torch)")
    args = parser.parse_args()
    if args.start_at:
        import datetime

        import untrac.pipeline  # noqa: F401 - the slow imports, done before the wait

        hour, minute = map(int, args.start_at.split(":"))
        target = datetime.datetime.now().replace(hour=hour, minute=minute, second=0, microsecond=0)
        time.sleep(max(0.0, (target - datetime.datetime.now()).total_seconds()))
    if args.cmd == "train" and args.only:
        train_only(args.overrides, parse_seeds(args.seeds), args.only, args.checkpoints)
        return
    if args.cmd == "train":
        train_and_measure(args)
        return
    table = pd.concat([pd.read_csv(p) for p in args.csv if not p.name.endswith(".train.csv")], ignore_index=True)
    # the same seed measured twice (a cached model evaluated again) counts once
    table = table.drop_duplicates(["label", "testset", "seed", "train_dataset", "test_subset"])
    summary = pd.DataFrame(agreement(table, args.max_splits))
    pd.set_option("display.width", 200)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        summary.to_csv(args.out, index=False)
    print("\nseed-mean ground truth, standardised (the training datasets in their order):")
    print(pd.DataFrame(standardised_means(table)).to_string(index=False))
    pred = pd.DataFrame(predicted(table))
    if len(pred):
        print("\npredicted from the seeds at hand (resampled residuals; optimistic for few seeds):")
        print(pred.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if args.out:
            pred.to_csv(args.out.with_suffix(".predicted.csv"), index=False)
    for path in args.csv:
        train_csv = path.with_suffix(".train.csv")
        if train_csv.exists() and train_csv.stat().st_size > 1:
            t = pd.read_csv(train_csv)
            print(f"\n{train_csv}: seconds per training (median {t.seconds.median():.1f}), "
                  f"train loss first10→last10 by excluded dataset:")
            print(t.groupby("exclude")[[c for c in ("seconds", "cpu_seconds", "loss_first10", "loss_last10") if c in t]].mean().round(3).to_string())


if __name__ == "__main__":
    sys.exit(main())
