"""The paper's published numbers, and the names the tables print.

The reference values are transcribed from Isonuma & Titov (ACL 2024) into package data:
``reference/table2.csv`` (Table 2, standardised influence), ``reference/table3_5.csv`` (Table 3 =
Pearson, Table 5 = Spearman, mean and std over four runs) and ``reference/table4.csv`` (Table 4,
Pearson). Table 4's UnTrac-Inv at lr 5e-6 is not legible in the text we have and is left empty.
"""

from importlib import resources

import pandas as pd

METHODS = {"graddot": "GradDot", "gradcos": "GradCos", "hif_arnoldi": "HIF (Arnoldi)", "hif_lissa": "HIF (LISSA)",
           "tracin": "TracIn", "untrac": "UnTrac", "untrac_inv": "UnTrac-Inv",
           "ekfac": "EK-FAC",  # not in the paper: its "paper" row stays blank
           "ground_truth": "Ground Truth"}
TESTSETS = {"toxigen": "ToxiGen", "winobias": "WinoBias", "truthfulqa": "TruthfulQA"}
SIZES = {"equal": "Equal", "different": "Different"}
OPTIMIZERS = {"sgd": "SGD", "sgd_momentum": "SGD w/momentum", "rmsprop": "RMSProp", "adam": "Adam",
              "adafactor": "Adafactor"}
LEARNING_RATES = (5e-6, 1e-5, 5e-5, 1e-4, 5e-4)
SYNTHETIC = {"dataset1": "1 (Task P/Fmt P)", "dataset2": "2 (Task P/Fmt Q)", "dataset3": "3 (Task Q/Fmt P)",
             "dataset4": "4 (Task Q/Fmt Q)"}


def label(method: str) -> str:
    """The name a table prints for a method: the paper's, or the registry name of a method the paper lacks."""
    return METHODS.get(method, method)


def in_order(present) -> list[str]:
    """The methods of ``present`` in the paper's row order, any other (a newly added plugin) after them."""
    present = set(present)
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def reference(name: str) -> pd.DataFrame:
    """One reference table: ``table2``, ``table3_5`` or ``table4``."""
    with (resources.files("untrac") / "reference" / f"{name}.csv").open() as handle:
        return pd.read_csv(handle)
