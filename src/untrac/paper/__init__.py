"""The paper's results end to end: ``python -m untrac.paper TARGET`` (``make table2`` … ``make fig4``).

    published   the paper's numbers (package data ``untrac/reference/*.csv``) and display names
    tables      Tables 2–5, measured beside published
    figures     Figures 2–4 and the heatmap beside each table
    sweeps      reading a Hydra multirun directory: the jobs it defines, their status and configs
    pooling     which jobs may be pooled: configs that differ only in what the sweeps vary
    aggregate   sweep directories → ``<out>/tables/<target>.*`` and ``<out>/figures/<target>.png``
    plan        the planner: the union of the models a target's jobs need (Hydra's own sweep expansion),
                trained as one Hydra job per model (``train-models``) into the shared cache
    targets     the driver: plan and train the models, sweep(s), aggregate
"""

from pathlib import Path

from untrac.paper.published import reference

# The repository's conf/ (this package runs from a source checkout, as ``untrac.run`` does).
REPO = Path(__file__).resolve().parents[3]

__all__ = ["REPO", "reference"]
