"""The paper targets' settings, as properties a reader can check against the paper and conf/.

Per result: the paper's model, data and test sets (§5.1: T5 on synthetic data A and B; §5.2: OPT on
the eight corpora, equal and different sizes, three test sets; §6 and App. A.1: ToxiGen); Tables 2, 3
and 5 sweep the methods of the paper's rows (plus EK-FAC, the runner's addition); Table 4 the
optimizers and learning rates of its columns; every unlearning setting a result does not sweep is §5's.
At paper scale each training value the paper states is its value (the others cite their source in the
YAML); what cpu scale changes: test_cpu_scale. The paper's numbers and names are read from
its text (``$UNTRAC_SHARED/paper.md``, default ``../shared``); the tests that need it skip where it is absent.
"""

import os
import re
from operator import attrgetter
from pathlib import Path

import pytest
import yaml

from target_jobs import FAMILY, SCALES, each_value_once, head, jobs, swept, typed_job

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
PAPER_MD = Path(os.environ.get("UNTRAC_SHARED", REPO.parent / "shared")) / "paper.md"

MODELS = {("synthetic", "cpu"): "t5_standin", ("synthetic", "paper"): "t5xl",  # §5.1: LM-adapted T5-XL
          ("pile8", "cpu"): "opt_tiny", ("pile8", "paper"): "opt125m"}  # §5.2: OPT-125m
# The paper's names (its table rows and columns, its text) → the runner's (conf/method, conf/optim, conf/testset).
NAMES = {"GradDot": "graddot", "GradCos": "gradcos", "HIF (Arnoldi)": "hif_arnoldi", "HIF (LISSA)": "hif_lissa",
         "TracIn": "tracin", "UnTrac": "untrac", "UnTrac-Inv": "untrac_inv", "SGD": "sgd",
         "SGD w/momentum": "sgd_momentum", "RMSProp": "rmsprop", "Adam": "adam", "Adafactor": "adafactor",
         "ToxiGen": "toxigen", "Toxigen": "toxigen", "WinoBias": "winobias", "TruthfulQA": "truthfulqa"}
NOT_IN_THE_PAPER = ["ekfac"]  # EK-FAC (kronfluence): a method the runner adds to the tables' rows
WORDS = {"four": 4}


@pytest.fixture(scope="module")
def paper() -> str:
    if not PAPER_MD.is_file():
        pytest.skip(f"{PAPER_MD} is absent: the paper's text is not available here")
    return PAPER_MD.read_text()


def table(paper: str, n: int) -> list[list[str]]:
    """The cells of the paper's Table n: the tab-separated lines just above its caption."""
    lines = paper.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith(f"Table {n}:"))
    while not lines[end - 1].strip():
        end -= 1
    start = end
    while "\t" in lines[start - 1]:
        start -= 1
    return [line.split("\t") for line in lines[start:end]]


def rows(paper: str, n: int) -> list[str]:
    """The labels of Table n's rows of numbers (its methods, and Table 2's ground truth)."""
    return [cells[0] for cells in table(paper, n) if re.search(r"\d\.\d{3}", cells[1])]


def stated(paper: str, pattern: str):
    """The one number (or number word) the paper's text states where ``pattern`` (one group) matches."""
    found = re.findall(pattern, " ".join(paper.split()))
    assert len(found) == 1, f"{pattern!r}: {len(found)} matches in the paper"
    text = found[0].replace(",", "")
    return WORDS[text] if text in WORDS else int(text) if text.isdigit() else float(text)


# §5: the unlearning settings of every experiment (what a result does not sweep), and the baselines'.
SECTION5 = {
    "lr": r"constant learning rate of ([\d.e-]+), \$\\beta_1",
    "beta1": r"\\beta_1 = ([\d.]+)",
    "beta2": r"\\beta_2 = ([\d.]+)",
    "untrac batch": r"As for UnTrac, we set the batch size to (\d+)",
    "untrac epochs": r"run unlearning for (\d+) epoch\.",
    "untrac_inv batch": r"we set the batch size as (\d+) \(a single batch contains all test examples\)",
    "untrac_inv epochs": r"the number of unlearning steps \(epochs\) as (\d+)\.",
    "lissa iterations": r"LISSA \(Agarwal et al\., 2017\), where the number of iterations is set to (\d+)",
    "hessian examples": r"and (\d+) training examples are used to approximate the Hessian",
}


@pytest.mark.parametrize("part,scale", [(p, s) for p in FAMILY for s in SCALES])
def test_each_result_composes_the_papers_model_data_and_test_sets(part, scale):
    """§5.1: T5 on synthetic data A and B (both swept); §5.2: OPT on the eight corpora (the sizes and test
    sets each result sweeps: ``test_pile8_results_sweep_the_papers_test_sets_and_sizes``)."""
    family = FAMILY[part]
    cfg, params = typed_job(each_value_once(part, scale)[0]), swept(head(part, scale))
    assert (cfg.model.name, cfg.scale) == (MODELS[(family, scale)], scale)
    if family == "synthetic":
        assert params["data"] == ["synthA", "synthB"] and cfg.testset.name == "synthetic"
    else:
        assert cfg.data.name == "pile8" and cfg.testset.name in ("toxigen", "winobias", "truthfulqa")
        assert {"data.sizes", "testset"} <= set(params)


def test_pile8_results_sweep_the_papers_test_sets_and_sizes(paper):
    """Tables 3/5: the columns of Table 3 (equal and different sizes × three test sets); Table 4 and
    Figure 3 (§6): ToxiGen, equal sizes; Figure 4 (App. A.1): ToxiGen, the sizes varied."""
    header, columns = table(paper, 3)[:2]
    sizes = list(dict.fromkeys(cell.split()[0].lower() for cell in header if cell.strip()))
    testsets = list(dict.fromkeys(NAMES[cell] for cell in columns[1:] if cell.strip()))
    text = " ".join(paper.split())
    six = re.search(r"influence of the pretraining dataset on (\w+) under various hyperparameter settings, "
                    r"where the size of each training dataset is set to be (\w+)", text)
    a1 = re.search(r"where the (?:pertaining|pretraining) dataset sizes are (varied) and (\w+) is used as a test", text)
    expected = {"table3": (sizes, testsets), "table5": (sizes, testsets),
                **{part: ([six[2]], [NAMES[six[1]]]) for part in ("table4", "table4_lr", "fig3", "fig3_b256")},
                "fig4": (["different" if a1[1] == "varied" else a1[1]], [NAMES[a1[2]]])}
    assert (sizes, testsets) == (["equal", "different"], ["toxigen", "winobias", "truthfulqa"])
    for part, (part_sizes, part_testsets) in expected.items():
        for scale in SCALES:
            params = swept(head(part, scale))
            assert (params["data.sizes"], params["testset"]) == (part_sizes, part_testsets), (part, scale)


@pytest.mark.parametrize("n,part", [(2, "table2"), (3, "table3"), (5, "table5")])
def test_tables_2_3_and_5_sweep_the_methods_of_the_papers_rows(n, part, paper):
    """At pile8's paper scale HIF (Arnoldi) is its §5.2 preset (n = 200, p = 100: hif_arnoldi_pile8)."""
    methods = [NAMES[label] for label in rows(paper, n) if label != "Ground Truth"]
    assert len(methods) == 7
    for scale in SCALES:
        arnoldi = "hif_arnoldi_pile8" if (FAMILY[part], scale) == ("pile8", "paper") else "hif_arnoldi"
        sweep = swept(head(part, scale))["method"]
        assert len(sweep) == len(set(sweep)), sweep
        assert sorted(sweep) == sorted([arnoldi if m == "hif_arnoldi" else m for m in methods] + NOT_IN_THE_PAPER)


@pytest.mark.parametrize("scale", SCALES)
def test_table4_sweeps_the_optimizers_and_learning_rates_of_its_columns(scale, paper):
    """Each cell of Table 4 is run once, over its two parts: every optimizer of its top half at §5's lr,
    and Adam at every learning rate of its bottom half."""
    cells = table(paper, 4)
    optimizers = [NAMES[c] for c in cells[0][1:]]
    rates = [float(c) for c in next(row for row in cells if row[0] == "Learning Rate")[1:]]
    methods = list(dict.fromkeys(NAMES[row[0]] for row in cells if row[0] in NAMES))
    lr = stated(paper, SECTION5["lr"])
    assert (cells[0][0], len(optimizers), len(rates), methods, lr) == ("Optimizer", 5, 5, ["untrac", "untrac_inv"], 5e-5)
    run = []
    for part in ("table4", "table4_lr"):
        lr_of = {cfg.optim.name: cfg.optim.lr for cfg in map(typed_job, each_value_once(part, scale))}
        run += [(job["method"], job["optim"], float(job.get("optim.lr", lr_of[job["optim"]])))
                for job in jobs(part, scale)]
    expected = {(m, o, lr) for m in methods for o in optimizers} | {(m, "adam", r) for m in methods for r in rates}
    assert sorted(run) == sorted(expected)


FIG4_MODES = {"all the examples": "all_examples", "the same number of steps": "fixed_steps"}  # App. A.1's two


def test_figures_sweep_what_their_captions_show(paper):
    """Figure 2: UnTrac (top) and UnTrac-Inv (bottom) on synthetic data A and B; Figure 3 (§6.1): both
    methods at batch sizes 1 and 256; Figure 4: the ground truth trained on all the other examples (left)
    or for the same number of steps (right)."""
    text = " ".join(paper.split())
    fig2 = re.search(r"Figure 2: The influence estimated by (\S+) \(top\) and (\S+) \(bottom\) on the synthetic "
                     r"datasets (\w) \(left\) and (\w) \(right\)", text)
    fig3 = re.search(r"estimated by (\S+) \(left\) and (\S+) \(right\) over unlearning epochs", text)
    batches = re.search(r"over unlearning epochs with batch sizes of (\d+) and (\d+)", text)
    fig4 = re.search(r"Left: each counterfactual model is trained on (all the examples) .{0,40}"
                     r"Right: each counterfactual model is trained for (the same number of steps)", text)
    expected = {
        "fig2": {"method": [NAMES[fig2[1]]], "data": [f"synth{fig2[3]}", f"synth{fig2[4]}"]},
        "fig2_inv": {"method": [NAMES[fig2[2]]], "data": [f"synth{fig2[3]}", f"synth{fig2[4]}"]},
        "fig3": {"method": [NAMES[fig3[1]], NAMES[fig3[2]]], "unlearn.batch_size": [batches[1]]},
        "fig3_b256": {"method": [NAMES[fig3[1]], NAMES[fig3[2]]], "unlearn.batch_size": [batches[2]]},
        "fig4": {"groundtruth.mode": [FIG4_MODES[fig4[1]], FIG4_MODES[fig4[2]]]},
    }
    for part, values in expected.items():
        for scale in SCALES:
            params = swept(head(part, scale))
            assert {key: params[key] for key in values} == values, (part, scale)


@pytest.mark.parametrize("part,scale", [(p, s) for p in FAMILY for s in SCALES])
def test_each_swept_value_unlearns_and_scores_as_section_5_unless_its_result_sweeps_it(part, scale, paper):
    """Adam (Adafactor in §5.1) at a constant 5e-5, no clipping; UnTrac batch 1 for 1 epoch, UnTrac-Inv
    the whole test subset for 5 epochs; LiSSA 10 iterations, 256 examples for the Hessian, Arnoldi
    n = p = 25 in §5.1 and n = 200, p = 100 in §5.2 (at paper scale; TracIn's checkpoints: the test below)."""
    s = {key: stated(paper, pattern) for key, pattern in SECTION5.items()}
    arnoldi = re.findall(r"n = (\d+) and .{0,60}?p\}? = (\d+)\$?\s+in Section (5\.[12])", " ".join(paper.split()))
    arnoldi = {section: (int(n), int(p)) for n, p, section in arnoldi}
    family = FAMILY[part]
    params = swept(head(part, scale))
    for job in each_value_once(part, scale):
        cfg = typed_job(job)
        if "optim" not in params:
            assert cfg.optim.name == ("adafactor" if family == "synthetic" else "adam")
        if "optim.lr" not in params:
            assert cfg.optim.lr == s["lr"]
        if cfg.optim.name == "adam":
            assert tuple(cfg.optim.betas) == (s["beta1"], s["beta2"])
        assert cfg.unlearn.clip_grad is None  # "Gradient clipping is turned off during unlearning"
        if cfg.method.name in ("untrac", "untrac_inv"):
            batch = "unlearn.batch_size" in params or cfg.unlearn.batch_size == s[f"{cfg.method.name} batch"]
            epochs = "unlearn.epochs" in params or cfg.unlearn.epochs == s[f"{cfg.method.name} epochs"]
            assert batch and epochs, (job, cfg.unlearn)
        if cfg.method.name in ("hif_lissa", "hif_arnoldi"):
            assert cfg.method.hessian_examples == s["hessian examples"]
        if cfg.method.name == "hif_lissa":
            assert cfg.method.lissa_iterations == s["lissa iterations"]
        if cfg.method.name == "hif_arnoldi" and scale == "paper":
            expected = arnoldi["5.1" if family == "synthetic" else "5.2"]
            assert (cfg.method.arnoldi_iterations, cfg.method.arnoldi_topk) == expected, job


# At paper scale: the values the paper's text states (the others cite their source in the YAML:
# test_every_paper_scale_training_value_cites_its_source).
STATED = {
    "synthetic": {  # §5.1, Table 2's caption, §5 (TracIn)
        "data.n_per_dataset": r"Each training dataset and test dataset consists of ([\d,]+) examples",
        "testset.per_subset": r"Each training dataset and test dataset consists of ([\d,]+) examples",
        "train.steps": r"The model is trained for ([\d,]+) steps on the mixture",
        "train.batch_size": r"on the mixture of the four training datasets with a batch size of (\d+)",
        "train.checkpoint_every": r"checkpoints saved for every ([\d,]+) steps in Section 5\.1",
        "runs": r"The average is shown across (\w+) runs",
    },
    "pile8": {  # §5.2, §5 (TracIn; UnTrac-Inv's batch of 256 is a whole test subset)
        "train.steps": r"OPT is pretrained for ([\d,]+) steps",
        "train.batch_size": r"pretrained for [\d,]+ steps with a batch size of (\d+)",
        "data.block_size": r"consists of a sequence of ([\d,]+) tokens",
        "train.checkpoint_every": r"and ([\d,]+) steps in Section 5\.2",
        "score.samples_per_dataset": r"we randomly sample ([\d,]+) examples from each dataset",
        "testset.per_subset": r"batch size as (\d+) \(a single batch contains all test examples\)",
        "runs": r"average and standard deviation across (\w+) runs using different examples",
    },
}
ONE_RUN = {"fig4"}  # App. A.1 shows one ground truth: conf/experiment/fig4.yaml runs once


@pytest.mark.parametrize("part", sorted(FAMILY))
def test_paper_scale_holds_the_values_the_paper_states(part, paper):
    cfg = typed_job(each_value_once(part, "paper")[0])
    expected = {key: stated(paper, pattern) for key, pattern in STATED[FAMILY[part]].items()}
    if part in ONE_RUN:
        expected["runs"] = 1
    assert {key: attrgetter(key)(cfg) for key in expected} == expected
    if FAMILY[part] == "pile8":
        assert cfg.data.size_scale == 1.0  # the corpora's sizes of §5.2 (untrac.data.corpora.PAPER_SIZES)


@pytest.mark.parametrize("path", sorted([*CONF.glob("scale/*/paper.yaml"), CONF / "scale" / "pile8_data" / "paper.yaml"]),
                         ids=lambda p: str(p.relative_to(CONF)))
def test_every_paper_scale_training_value_cites_its_source(path):
    """Each ``train.*`` value at paper scale carries its source on its line: the paper's section, or the
    authors' script / arguments.py (or HF's default) where the paper is silent."""
    lines, inside, cited = path.read_text().splitlines(), False, 0
    for line in lines:
        if not line.startswith(" "):
            inside = line.startswith("train:")
        elif inside and not line.lstrip().startswith("#"):
            assert "#" in line and any(src in line for src in ("§", ".sh", "arguments.py", "HF ")), f"{path.name}: {line}"
            cited += 1
    assert cited or "train" not in (yaml.safe_load(path.read_text()) or {})

