"""Result files of a run (DESIGN §6) and the tables people read: Markdown, LaTeX, CSV, PNG."""

import json
import math
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import pandas as pd

from untrac.metrics import correlations, standardized_influence, summarize, truth_agreement
from untrac.record import (CORRELATIONS, EXAMPLES, INFLUENCE, LDS, METRICS, SHAPLEY, SUBSETS, SUMMARY, TRUTH,
                           TRUTH_SEEDS, write_frame, write_text)
from untrac.subsets import bank_floor, bank_tables


@dataclass(frozen=True, eq=False)  # eq=False: data frames have no truth value to compare by
class RunReport:
    """Everything a finished run reports: what ``write_run`` writes as the output contract
    (``untrac.record``) and ``summary_markdown`` summarises.

    ``influence`` and ``truth``: ``record.INFLUENCE`` and ``record.TRUTH`` rows; an empty ``truth``
    (groundtruth.mode=none) means no correlations (header-only files) and a ranking per test subset
    in the summary instead. ``title``: summary.md's heading. ``seconds``: per stage. ``counters``: the
    pipeline's counters, into metrics.json (``nonfinite``, ``hif_solver`` and ``params_*`` also get
    sections of summary.md).
    ``retrained_truth``: runs re-trained the ground truth (so its run-to-run agreement, the noise
    floor, means something); False when runs only re-sample the scored examples.
    ``truth_seeds``: Eq. 1 of every ground-truth seed (``record.TRUTH_SEEDS``); with ≥ 2 seeds the
    noise floor compares disjoint halves of them.
    ``examples`` (rank.top_k): the top training examples, written as ``record.EXAMPLES``.
    ``subsets`` (groundtruth.mode=subsets): v(S) of the bank, written as ``record.SUBSETS`` with the
    LDS and Shapley files and a section of summary.md.
    ``theta0``: what the scored model is (``untrac.config.theta0_text``), in summary.md and metrics.json.
    """

    influence: pd.DataFrame
    truth: pd.DataFrame
    title: str
    _: KW_ONLY  # the optional parts by name
    seconds: dict = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    retrained_truth: bool = True
    truth_seeds: pd.DataFrame | None = None
    examples: pd.DataFrame | None = None
    subsets: pd.DataFrame | None = None
    theta0: str = ""


def mean_std(mean: float, std: float, low: float | None = None, high: float | None = None) -> str:
    """"mean ± std [low, high]": the interval (95 % bootstrap) only when there is one."""
    if mean is None or math.isnan(mean):
        return "nan"
    text = f"{mean:.3f}" if std is None or math.isnan(std) else f"{mean:.3f} ± {std:.3f}"
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def write_table(frame: pd.DataFrame, stem: Path, caption: str = "") -> None:
    """The same table as ``stem.md``, ``stem.tex`` and ``stem.csv``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(stem.with_suffix(".csv"))
    stem.with_suffix(".md").write_text((f"{caption}\n\n" if caption else "") + frame.to_markdown() + "\n")
    stem.with_suffix(".tex").write_text(frame.to_latex(caption=caption or None, escape=True))


def correlation_table(summary: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame({
        "Pearson": [mean_std(*v) for v in zip(summary.pearson_mean, summary.pearson_std,
                                              summary.pearson_ci_low, summary.pearson_ci_high)],
        "Spearman": [mean_std(*v) for v in zip(summary.spearman_mean, summary.spearman_std,
                                               summary.spearman_ci_low, summary.spearman_ci_high)],
        "runs": summary.runs.to_numpy(),
        "subsets scored": [f"{k} / {n}" for k, n in zip(summary.subsets_scored, summary.subsets_total)]},
        index=summary.method)
    table.index.name = "method"
    return table


def ranking_stats(corr: pd.DataFrame) -> pd.DataFrame:
    """Per method: the median exact p-value of each correlation over (run, test subset) pairs, the
    share of pairs whose top dataset is the truth's, and the mean NDCG (record.CORRELATIONS)."""
    stats = corr.groupby("method", sort=False).agg(pearson_p=("pearson_p", "median"),
                                                   spearman_p=("spearman_p", "median"),
                                                   top1=("top1", "mean"), ndcg=("ndcg", "mean"))
    stats.columns = ["Pearson p (median)", "Spearman p (median)", "top-1 hit", "NDCG"]
    return stats.round(3)


def bank_lines(bank: dict[str, pd.DataFrame], floor: float, n_subsets: int) -> list[str]:
    """summary.md's section on the bank of subset retrains (untrac.subsets.bank_tables)."""
    lds = bank["lds"].groupby("method", sort=False).lds.agg(["mean", "std", "count"])
    lines = ["## The bank of subset retrains (group LDS, Shapley, additivity)", "",
             f"{n_subsets} models per seed, each trained without a subset S of the training datasets; v(S) = "
             "L(θ−S) − L(θ0), mean over the ground-truth seeds. Group LDS: Spearman over the subsets between "
             "the method's summed influences and v(S) (mean ± std over (run, test subset)). "
             f"Its ceiling, the bank against itself from disjoint seed halves: {floor:.3f}." if math.isfinite(floor)
             else f"{n_subsets} models per seed; one ground-truth seed, so no floor for the LDS.", "",
             lds.rename(columns={"mean": "LDS", "std": "± std", "count": "pairs"}).round(3).to_markdown(), "",
             f"Additivity (R² of v(S) against the summed single-dataset effects, subsets of ≥ 2 datasets): "
             f"{bank['additivity'].additivity.mean():.3f} (1 = leave-one-out tells everything).", ""]
    if len(bank["shapley"]):
        shap = bank["shapley"].groupby("train_dataset", sort=False)[["shapley", "loo"]].mean()
        lines += ["Exact Shapley value of each dataset beside its leave-out influence v({Z}) (mean over runs "
                  "and test subsets):", "", shap.round(4).to_markdown(), ""]
    else:
        lines += ["Shapley values need every subset in the bank (groundtruth.subsets=all): not computed.", ""]
    if len(bank["removal"]):
        removal = bank["removal"].groupby(["method", "k"], sort=False)[["loss_change", "mean_k"]].mean()
        lines += ["Top-k removal: v of each method's k most influential datasets removed together, against the "
                  "mean v over every k-subset (higher than the mean: the method's picks matter):", "",
                  removal.round(4).to_markdown(), ""]
    return lines


def ranking_table(influence: pd.DataFrame) -> pd.DataFrame:
    """Per test subset, the training datasets by final influence (mean over runs), highest first."""
    final = influence[influence.is_final]
    mean = final.groupby(["method", "test_subset", "train_dataset"], sort=False).influence.mean().reset_index()
    rows = {}
    for (method, subset), group in mean.groupby(["method", "test_subset"], sort=False):
        ranked = group.sort_values("influence", ascending=False, kind="stable")
        rows[(method, subset)] = [f"{z} ({v:.3g})" for z, v in zip(ranked.train_dataset, ranked.influence)]
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = [f"#{i + 1}" for i in range(table.shape[1])]
    table.index = pd.MultiIndex.from_tuples(table.index, names=["method", "test subset"])
    return table


NO_TRUTH = ("No correlations: groundtruth.mode=none trains no leave-dataset-out models, so there is no "
            "ground truth to compare with (set groundtruth.mode=fixed_steps to measure one).")


def floor_text(floor: dict) -> str:
    """What the noise floor compares, in words (metrics.truth_agreement)."""
    if floor["compares"] == "runs":
        what = f"Mean pairwise agreement of the ground truth between runs ({floor['pairs']} run pairs × subsets)"
    else:
        h, s = floor["seeds_per_half"], floor["seeds"]
        what = (f"Agreement between the mean ground truths of two disjoint groups of {h} of the {s} training "
                f"seeds ({h} vs {h} seeds; {floor['pairs']} splits × subsets × runs)")
    text = (f"{what}: Pearson {floor['pearson']:.3f}, Spearman {floor['spearman']:.3f}. "
            "A method cannot be expected to agree with the ground truth much more than it agrees with itself.")
    if floor["compares"] == "halves":
        s, sb = floor["seeds"], floor["pearson_all_seeds"]
        text += f" The reported ground truth is the mean of all {s} seeds, more reliable than either half"
        text += (f": Spearman–Brown predicts Pearson {sb:.3f} between two independent {s}-seed means."
                 if math.isfinite(sb) else " (Spearman–Brown gives no number: the halves do not agree positively).")
    if floor.get("between_runs"):
        runs = floor["between_runs"]
        text += (f" Between runs, each with its own {s} seeds ({runs['pairs']} run pairs × subsets): "
                 f"Pearson {runs['pearson']:.3f}, Spearman {runs['spearman']:.3f}.")
    return text


def coverage_line(counters: dict) -> list[str]:
    """What share of the model's parameters the method scores with (``counters['params_*']``,
    untrac.models.record_coverage): all weights, or EK-FAC's / LoRA's modules."""
    if "params_covered" not in counters:
        return []
    by, share = counters["params_covered_by"], 100 * counters["params_share"]
    numbers = f"{counters['params_covered']:,} of {counters['params_total']:,} parameters"
    text = (f"{share:.1f} % ({by}, {numbers})" if by == "all weights"
            else f"{by}, {share:.1f} % of parameters ({numbers})")
    return [f"Parameters covered: {text}.", ""]


def summary_markdown(report: RunReport, corr: pd.DataFrame, floor: dict, sections: list[str] = ()) -> str:
    """summary.md: ``report`` with its correlations ``corr`` (``metrics.correlations``), the noise
    ``floor`` (``metrics.truth_agreement``; empty: no section) and extra ``sections`` (lines) before
    the seconds per stage."""
    influence, truth, counters, theta0 = report.influence, report.truth, report.counters, report.theta0
    final = influence[influence.is_final]
    parts = [standardized_influence(final, ["method"])]
    if len(truth):
        parts.append(standardized_influence(truth.assign(method="ground truth"), ["method"]))
    lines = [f"# {report.title}", ""] + ([f"θ0, the model every method scored: {theta0}.", ""] if theta0 else [])
    lines += [*coverage_line(counters), "## Standardised influence of each training dataset (Table 2 style)", "",
             "The influence averaged over runs (and test subsets), z-scored across training datasets "
             "(population std: each row has mean 0 and std 1, as the paper's Table 2).", "",
             pd.concat(parts).round(3).to_markdown(), ""]
    if not len(truth):
        lines += ["## Training datasets ranked by influence, per test subset", "",
                  "Final influence (mean over runs), highest first: the datasets that helped most on the subset.", "",
                  ranking_table(influence).reset_index().to_markdown(index=False), "", "## Correlation with a ground truth", "", NO_TRUTH, ""]
    else:
        lines += ["## Correlation with the leave-dataset-out ground truth (Table 3 style)", "",
                  "Per test subset, averaged over subsets within a run; mean ± std over runs, and in brackets "
                  "the 95 % bootstrap interval of the mean over (run, test subset) pairs. \"subsets scored\": "
                  "(run, test subset) pairs with a finite correlation, of all pairs; the others (constant or "
                  "non-finite influence) are left out of the means.", "",
                  correlation_table(summarize(corr)).to_markdown(), "",
                  "Exact permutation p-values (all K! orderings; with K = 4 no Spearman p is below 2/24 ≈ 0.083), "
                  "top-1 hit and NDCG against the ground truth's order:", "", ranking_stats(corr).to_markdown(), ""]
    if floor:
        lines += ["## Ground-truth noise floor", "", floor_text(floor), ""]
    if nonfinite := counters.get("nonfinite", []):
        lines += ["## Non-finite losses", "", "Unlearning produced NaN/inf and was stopped; these influences are NaN "
                  "and their correlations are NaN:", ""] + [f"- {item}" for item in nonfinite] + [""]
    if solver := counters.get("hif_solver"):
        lines += hif_solver_lines(solver)
    seconds = pd.Series(report.seconds, name="seconds").round(2)
    lines += [*sections, "## Seconds per stage", "", seconds.to_markdown(), ""]
    return "\n".join(lines)


def hif_solver_lines(solver: list) -> list[str]:
    """One line per HIF solve (``counters["hif_solver"]``, methods/hif.py): operator, λ_max, scale,
    residual ‖(M + λI)x − v‖/‖v‖ and status, so a diverged or truncated inverse is not silent."""
    lines = ["## HIF inverse", "", "Relative residual ‖(M + λI)x − v‖/‖v‖ of each test subset's solve "
             "(x = 0 scores 1). converged ≤ 1e-3; truncated / low-rank: bounded but not solved; "
             "diverged / near-singular: the numbers are not an inverse.", ""]
    for run, rec in enumerate(solver):
        residual = max(rec.get("residual", {}).values(), default=float("nan"))
        detail = (f"λ_max≈{rec['lambda_max']:.4g}, scale {rec['scale']:.4g}, {rec['iterations']} iterations"
                  if "scale" in rec else f"{rec.get('kept')} eigenpairs, smallest denominator "
                  f"{rec.get('min_denominator', float('nan')):.3g}")
        bad = rec["status"] in ("diverged", "near-singular")
        flag = " **(not an inverse: do not trust these influences)**" if bad else ""
        lines.append(f"- run {run}: {rec['method']} ({rec['variant']}, {rec['operator']}, damping {rec['damping']:g}): "
                     f"{detail}; max residual {residual:.3g} — **{rec['status']}**{flag}")
    return lines + [""]


def write_run(out_dir: Path, report: RunReport) -> str:
    """Write the files of the output contract (``untrac.record``) for ``report`` into ``out_dir``,
    metrics.json last, and return the summary text.

    Every file is written atomically; a write error is one UntracError line naming the file, and as
    metrics.json comes last a run dir without it is visibly incomplete.
    """
    influence, truth, truth_seeds, examples = report.influence, report.truth, report.truth_seeds, report.examples
    floor = truth_agreement(truth, truth_seeds, shared=not report.retrained_truth) if len(truth) else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_frame(out_dir, INFLUENCE, influence)
    write_frame(out_dir, TRUTH, truth)
    if truth_seeds is not None and len(truth_seeds):
        write_frame(out_dir, TRUTH_SEEDS, truth_seeds)
    corr = correlations(influence, truth)
    write_frame(out_dir, CORRELATIONS, corr)
    if examples is not None and len(examples):
        write_frame(out_dir, EXAMPLES, examples)
    bank_metrics, sections = _write_bank(out_dir, report)
    text = summary_markdown(report, corr, floor, sections)
    write_text(out_dir / SUMMARY, text)
    summary = summarize(corr) if len(corr) else pd.DataFrame()
    metrics = {
        "correlation": {row.method: {"pearson_mean": row.pearson_mean, "pearson_std": row.pearson_std,
                                     "pearson_ci_low": row.pearson_ci_low, "pearson_ci_high": row.pearson_ci_high,
                                     "spearman_mean": row.spearman_mean, "spearman_std": row.spearman_std,
                                     "spearman_ci_low": row.spearman_ci_low, "spearman_ci_high": row.spearman_ci_high,
                                     "runs": int(row.runs), "subsets_scored": int(row.subsets_scored),
                                     "subsets_total": int(row.subsets_total)} for row in summary.itertuples()},
        **({"theta0": report.theta0} if report.theta0 else {}),
        "truth_agreement": floor,
        **bank_metrics,
        **({} if len(truth) else {"no_correlations": NO_TRUTH}),
        "seconds": dict(report.seconds),
        "counters": report.counters,
    }
    write_text(out_dir / METRICS, json.dumps(_finite(metrics), indent=2, default=str))
    return text


def _write_bank(out_dir: Path, report: RunReport) -> tuple[dict, list[str]]:
    """The bank's files (subsets, LDS, Shapley), its metrics.json entry and its summary.md section;
    nothing without a bank (groundtruth.mode other than subsets)."""
    subsets = report.subsets
    if subsets is None or not len(subsets):
        return {}, []
    bank = bank_tables(report.influence, subsets, list(dict.fromkeys(report.truth.train_dataset)))
    write_frame(out_dir, SUBSETS, subsets)
    write_frame(out_dir, LDS, bank["lds"])
    if len(bank["shapley"]):
        write_frame(out_dir, SHAPLEY, bank["shapley"])
    n_subsets, lds_floor = subsets.removed.nunique(), bank_floor(subsets)
    metrics = {"bank": {"subsets": int(n_subsets), "lds_floor": lds_floor,
                        "additivity": float(bank["additivity"].additivity.mean()),
                        "lds": bank["lds"].groupby("method", sort=False).lds.mean().to_dict()}}
    return metrics, bank_lines(bank, lds_floor, n_subsets)


def _finite(value):
    """JSON has no NaN: undefined numbers (e.g. the std of one run) become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
