"""What cpu scale changes: every value of a paper result that differs from paper scale is a deviation
listed here (cpu value, paper value), each with the words of the family's cpu-scale files that state it
(conf/scale/<family>/cpu.yaml and the files beside it). A value moved at either scale without its
reason in those files fails here; the paper-scale values themselves: test_paper_settings."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from target_jobs import FAMILY, head, swept

CONF = Path(__file__).resolve().parents[2] / "conf"

# Every value that differs (the model preset by its name, a sweep by the values only one scale has).
SYNTHETIC_CPU = {  # conf/scale/synthetic/cpu.yaml
    "model.name": ("t5_standin", "t5xl", "The pretrained stand-in (conf/model/t5_standin.yaml, issue 20) stands in for T5-XL"),
    "runs": (3, 4, "Three runs"),
    "score.samples_per_dataset": (128, None, "the methods score a sample of 128 examples per dataset"),
    "train.steps": (400, 512, "400 steps at batch 8"),
    "train.batch_size": (8, 2, "400 steps at batch 8"),
    "train.optim": ("adamw", "adafactor", "AdamW at lr 1e-4 instead of Adafactor at 5e-5"),
    "train.lr": (1e-4, 5e-5, "AdamW at lr 1e-4 instead of Adafactor at 5e-5"),
    "train.clip_grad": (None, 1.0, "no gradient clipping (train.clip_grad unset"),
    "train.checkpoint_every": (100, 128, "TracIn checkpoints every 100 steps"),
    "groundtruth.seeds": (5, 1, "the mean over 5 training seeds (the paper: one retrain per run)"),
}
PILE8_CPU = {  # conf/scale/pile8/cpu.yaml, conf/scale/pile8_data/cpu.yaml
    "model.name": ("opt_tiny", "opt125m", "A tiny OPT (byte tokens) is pretrained from scratch"),
    "data.block_size": (128, 1024, "in 128-token blocks"),
    "data.size_scale": (0.01, 1.0, "1% of the paper's blocks"),
    "train.steps": (1200, 40000, "1,200 steps at batch 8"),
    "train.lr": (2e-3, 5e-5, "lr 2e-3 instead of 5e-5"),
    "train.clip_grad": (None, 1.0, "no gradient clipping (train.clip_grad unset"),
    "train.checkpoint_every": (300, 10000, "4 TracIn checkpoints, as the paper's 40,000 / 10,000"),
    "score.samples_per_dataset": (32, 10000, "32 blocks per training dataset"),
    "runs": (2, 4, "two runs"),
    "groundtruth.seeds": (4, 1, "Mean over 4 training seeds"),
    "testset.per_subset": (16, 256, "with 16 examples"),
    "unlearn.eval_every": (1000000, 32, "unlearning is evaluated at its start and end only"),
}
TABLE3_CPU = {"sweep method": ("hif_arnoldi", "hif_arnoldi_pile8", "HIF (Arnoldi) at n = p = 25 (the paper's 200 / 100")}
FIG2_CPU = {"runs": (2, 4, "two runs, not three")}  # conf/scale/fig2/cpu.yaml
# Figure 2 reads no ground truth: conf/scale/fig2/cpu.yaml sets its seeds back to 1, the paper scale's
FIG2_BASE = {key: value for key, value in SYNTHETIC_CPU.items() if key != "groundtruth.seeds"}
FIG3_CPU = {"sweep unlearn.epochs": ("8", "10", "8 epochs at batch 1")}  # conf/scale/fig3/cpu.yaml
CPU_DEVIATIONS = {
    "table2": SYNTHETIC_CPU,
    "fig2": {**FIG2_BASE, **FIG2_CPU,
             "sweep unlearn.eval_every": ("8", "16", "UnTrac evaluated every 8 of its 128 unlearning steps")},
    "fig2_inv": {**FIG2_BASE, **FIG2_CPU},
    "table3": {**PILE8_CPU, **TABLE3_CPU}, "table5": {**PILE8_CPU, **TABLE3_CPU},
    "table4": PILE8_CPU, "table4_lr": PILE8_CPU,
    "fig3": {**PILE8_CPU, **FIG3_CPU, "sweep unlearn.eval_every": ("16", "256", "evaluated every 16 steps")},
    "fig3_b256": {**PILE8_CPU, **FIG3_CPU},
    "fig4": {key: value for key, value in PILE8_CPU.items() if key != "runs"},  # one run at both scales
}
CPU_FILES = {"synthetic": ["synthetic/cpu.yaml", "fig2/cpu.yaml"],
             "pile8": ["pile8/cpu.yaml", "pile8_data/cpu.yaml", "fig3/cpu.yaml"]}


def _values(part: str, scale: str) -> dict:
    """The part's composed values at ``scale`` (dotted keys; of the model only its preset's name) and its sweep."""
    def leaves(node, prefix=""):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [(prefix + key, value)]

    cfg = head(part, scale)
    plain = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
             for key in cfg if key not in ("hydra", "model", "scale")}
    values = dict(leaves(plain))
    return {**values, "model.name": cfg.model.name, **{f"sweep {k}": v for k, v in swept(cfg).items()}}


def _comments(family: str) -> str:
    """The words of the family's cpu-scale files' comments, whitespace collapsed."""
    text = [line.split("#", 1)[1] for f in CPU_FILES[family]
            for line in (CONF / "scale" / f).read_text().splitlines() if "#" in line]
    return " ".join(" ".join(text).split())


@pytest.mark.parametrize("part", sorted(FAMILY))
def test_cpu_scale_deviates_from_paper_scale_only_where_its_files_say_so(part):
    cpu, paper = _values(part, "cpu"), _values(part, "paper")
    deviations = {}
    for key in sorted(set(cpu) | set(paper)):
        a, b = cpu.get(key), paper.get(key)
        if key.startswith("sweep ") and a is not None and b is not None:  # the values only one scale sweeps
            a, b = ",".join(v for v in a if v not in b), ",".join(v for v in b if v not in a)
        if a != b:
            deviations[key] = (a, b)
    expected = CPU_DEVIATIONS[part]
    assert deviations == {key: (a, b) for key, (a, b, _) in expected.items()}
    comments = _comments(FAMILY[part])
    assert [words for _, _, words in expected.values() if words not in comments] == []
