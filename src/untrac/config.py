"""Typed configuration: the schema Hydra validates against, with range checks.

Each dataclass is registered in Hydra's ConfigStore (``untrac.run.register_configs``) so that a
misspelled key or a wrong type is rejected while composing; ``__post_init__`` adds the checks a
type cannot express (lr > 0, ...) and runs when ``run.py`` turns the composed config into these objects.
Nothing here imports torch, pandas or a method module (the methods' schemas are
``untrac.method_config``), so a config error is reported in the time Python and Hydra take to start.
"""

from dataclasses import dataclass, field
from typing import Optional

from untrac.checks import check as _check, files_given as _check_files, one_of as _one_of, positive as _positive
from untrac.method_config import SCHEMAS, MethodConfig
from untrac.optim_config import OPTIMIZERS, AdamConfig, OptimConfig
from untrac.pretrain_config import PretrainConfig
from untrac.unlearn_config import LoraConfig, UnlearnConfig  # noqa: F401 - part of the schema

ARCHS = ("seq2seq", "causal", "auto")  # auto: a local checkpoint, kind read from its config
TRAIN_OPTIMIZERS = ("adamw", "adam", "adafactor", "sgd")
# data=files / testset=files: a causal model reads "prompt" + SEPARATOR + "target". A space, as
# lm-evaluation-harness' default target_delimiter; a BPE tokenizer then reads the target's first word
# with its leading space ("ĠThe"), as in running text. "" joins them as they are.
SEPARATOR = " "
TXT_UNITS = ("line", "paragraph")  # a .txt example: each non-blank line (datasets' text loader's default) or paragraph
# Run r's k-th ground-truth seed is its base seed + k·stride (untrac.groundtruth.truth_seeds).
GROUNDTRUTH_SEED_STRIDE = 1000
SEED_LIMIT = 2**32  # numpy's np.random.seed takes seeds below 2**32


@dataclass
class ModelConfig:
    """A model preset. ``name_or_path=None`` builds a random model from the size fields;
    ``arch=auto`` (``model=local``) loads the checkpoint folder ``name_or_path`` with its weights."""

    name: str = "t5_tiny"
    arch: str = "seq2seq"
    name_or_path: Optional[str] = None
    tokenizer: Optional[str] = "byt5"  # byt5 | standin (no files needed), a hub id / folder; null: name_or_path's
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 256
    max_positions: int = 512
    dtype: str = "float32"  # float32 | bfloat16 (autocast on CUDA only)
    pretrain: Optional[PretrainConfig] = None  # pretrained once, cached (untrac.pretrain); t5_standin

    def __post_init__(self) -> None:
        _one_of(self.arch, ARCHS, "model.arch")
        if isinstance(self.pretrain, dict):  # a plan file's JSON (untrac.paper.plan.read_entry)
            self.pretrain = PretrainConfig(**self.pretrain)
        _check(self.pretrain is None or (self.arch == "seq2seq" and not self.name_or_path and
                                         self.tokenizer == "standin"),
               "model.pretrain builds a tiny seq2seq model with the stand-in tokenizer: it needs model.arch=seq2seq, "
               "model.name_or_path=null and model.tokenizer=standin")
        _one_of(self.dtype, ("float32", "bfloat16"), "model.dtype")
        _check(self.arch != "auto" or bool(self.name_or_path), "model=local needs model.name_or_path=<checkpoint folder>")
        self.tokenizer = self.tokenizer or self.name_or_path  # the checkpoint's own tokenizer by default
        _check(bool(self.tokenizer), "model.tokenizer is not set (byt5, a hub id or a folder)")
        for key in ("d_model", "num_layers", "num_heads", "d_ff", "max_positions"):
            _positive(getattr(self, key), f"model.{key}")
        _check(self.num_heads <= 0 or self.d_model % self.num_heads == 0,  # num_heads <= 0: reported above
               "model.d_model must be divisible by model.num_heads")


@dataclass
class DataConfig:
    """Training datasets. ``kind=synthetic``: the paper's Table 1 tasks; ``pile8``: §5.2 corpora;
    ``files``: your own files (``untrac.data.files``), ``train`` = {name: file} and/or one file ``path``
    split into datasets by ``group_column``."""

    name: str = "synthA"
    kind: str = "synthetic"
    variant: str = "A"
    source: str = "generate"  # synthetic: generate | csv; pile8: local | hub
    root: Optional[str] = None
    seed: int = 0  # seed of the data itself (word samples), fixed across runs
    n_per_dataset: int = 256
    sizes: str = "equal"  # pile8: equal | different | custom
    size_scale: float = 1.0  # pile8: multiply the paper's sizes (CPU-scale runs)
    custom_sizes: dict[str, int] = field(default_factory=dict)
    block_size: int = 1024
    runs_vary: str = "seed"  # seed: each run retrains θ0 and ground truth | sample: only scoring sample
    train: dict[str, str] = field(default_factory=dict)  # files: dataset name -> file or save_to_disk folder
    path: Optional[str] = None  # files: one file holding every dataset, split by group_column
    group_column: Optional[str] = None
    text_column: str = "text"
    prompt_column: str = "prompt"
    target_column: str = "target"
    # files (untrac.data.files): an example's longest length in tokens, null = the model's positions, at
    # most 1024; the text between a prompt and its target (causal); what one example of a .txt file is.
    max_length: Optional[int] = None
    separator: str = SEPARATOR
    txt_unit: str = "line"

    def __post_init__(self) -> None:
        _one_of(self.kind, ("synthetic", "pile8", "files"), "data.kind")
        _one_of(self.runs_vary, ("seed", "sample"), "data.runs_vary")
        if self.kind == "files":
            _check_files(self.train, self.path, self.group_column, "data", "train")
            _one_of(self.txt_unit, TXT_UNITS, "data.txt_unit")
            _check(self.max_length is None or self.max_length >= 2,
                   f"data.max_length must be >= 2, got {self.max_length}")
        elif self.kind == "synthetic":
            _one_of(self.variant, ("A", "B"), "data.variant")
            _one_of(self.source, ("generate", "csv"), "data.source")
            _check(self.source != "csv" or bool(self.root), "data.source=csv needs data.root=<folder of the CSVs>")
        else:
            _one_of(self.source, ("local", "hub"), "data.source")
            _one_of(self.sizes, ("equal", "different", "custom"), "data.sizes")
            _check(self.source != "local" or bool(self.root), "data.source=local needs data.root=<corpus folder>")
        _positive(self.n_per_dataset, "data.n_per_dataset")
        _positive(self.size_scale, "data.size_scale")
        _positive(self.block_size, "data.block_size")


@dataclass
class TestsetConfig:
    """Test subsets. ``synthetic`` = the test set that comes with the synthetic data; ``files`` =
    your own files, read like ``data=files`` (``subsets`` = {name: file}, ``path`` + ``group_column``)."""

    name: str = "synthetic"
    source: str = "local"
    root: Optional[str] = None
    per_subset: int = 256
    max_subsets: Optional[int] = None
    subsets: dict[str, str] = field(default_factory=dict)  # files: subset name -> file or folder
    path: Optional[str] = None  # files: one file holding every subset, split by group_column
    group_column: Optional[str] = None
    text_column: str = "text"
    prompt_column: str = "prompt"
    target_column: str = "target"
    separator: str = SEPARATOR  # files, as data.separator
    txt_unit: str = "line"  # files, as data.txt_unit

    def __post_init__(self) -> None:
        _one_of(self.name, ("synthetic", "toxigen", "winobias", "truthfulqa", "files"), "testset")
        if self.name == "files":
            _check_files(self.subsets, self.path, self.group_column, "testset", "subsets")
            _one_of(self.txt_unit, TXT_UNITS, "testset.txt_unit")
        _one_of(self.source, ("local", "hub"), "testset.source")
        _positive(self.per_subset, "testset.per_subset")
        _positive(self.max_subsets, "testset.max_subsets")


@dataclass
class TrainConfig:
    """Training of θ0 and of every leave-dataset-out model θ−Z (paper §2, Eq. 1)."""

    steps: int = 200  # 0: nothing is trained, θ0 is the given model (model=local)
    batch_size: int = 8
    optim: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 1  # groundtruth.mode=all_examples: epochs over the data instead of steps
    checkpoint_every: int = 128  # TracIn checkpoints (paper: 128 synthetic, 10,000 pile8)
    clip_grad: Optional[float] = None  # max global gradient norm (authors' training: HF max_grad_norm 1.0)

    def __post_init__(self) -> None:
        _check(self.steps >= 0, f"train.steps must be >= 0, got {self.steps}")
        _positive(self.clip_grad, "train.clip_grad")
        _positive(self.batch_size, "train.batch_size")
        _positive(self.lr, "train.lr")
        _check(self.lr != float("inf"), f"train.lr must be finite, got {self.lr}")
        _positive(self.epochs, "train.epochs")
        _positive(self.checkpoint_every, "train.checkpoint_every")
        _one_of(self.optim, TRAIN_OPTIMIZERS, "train.optim")
        _check(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class ScoreConfig:
    """Which training examples a method sees; None = every example (synthetic data)."""

    samples_per_dataset: Optional[int] = None

    def __post_init__(self) -> None:
        _positive(self.samples_per_dataset, "score.samples_per_dataset")


@dataclass
class GroundTruthConfig:
    """fixed_steps: θ−Z trained T steps (paper §2); all_examples: epochs over D \\ Z (App. A.1);
    subsets: fixed_steps plus a bank of models each trained without a subset S of the datasets
    (group LDS, Shapley values, additivity: untrac.subsets); none: no leave-dataset-out models at
    all (influences and rankings only, no correlations).

    ``seeds``: S training seeds, each with its own θ0 and θ−Z; the ground truth is their mean
    (seed scheme in untrac.groundtruth.truth_seeds).
    """

    mode: str = "fixed_steps"
    seeds: int = 1
    # mode=subsets (the bank, DESIGN §2 "Beyond leave-one-out"): "all" = every subset of the K datasets
    # (2^K models per seed), or M = how many random subsets beside the K leave-one-out ones ...
    subsets: str = "all"
    keep_fraction: float = 0.5  # ... each keeping this share of the datasets (TRAK's α = 0.5 subsampling for its LDS)

    def __post_init__(self) -> None:
        _one_of(self.mode, ("fixed_steps", "all_examples", "subsets", "none"), "groundtruth.mode")
        _positive(self.seeds, "groundtruth.seeds")
        _check(self.subsets == "all" or (self.subsets.isdigit() and int(self.subsets) > 0),
               f"groundtruth.subsets must be all or a positive number of subsets, got {self.subsets!r}")
        _check(0 < self.keep_fraction < 1, f"groundtruth.keep_fraction must be in (0, 1), got {self.keep_fraction}")


@dataclass
class RankConfig:
    """``top_k``: also write examples.csv, the k most influential training examples per test subset
    (methods with per-example scores: untrac_inv, graddot, gradcos)."""

    top_k: Optional[int] = None

    def __post_init__(self) -> None:
        _positive(self.top_k, "rank.top_k")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    testset: TestsetConfig = field(default_factory=TestsetConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=AdamConfig)  # one node per optimizer: untrac.optim_config
    train: TrainConfig = field(default_factory=TrainConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    groundtruth: GroundTruthConfig = field(default_factory=GroundTruthConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    experiment: Optional[str] = None
    scale: str = "cpu"
    runs: int = 1
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None
    cache_dir: str = "outputs/cache"
    shared_dir: str = "../shared"  # the read-only data folder beside the checkout (local corpora, test sets)

    def __post_init__(self) -> None:
        _positive(self.runs, "runs")
        # Run r's ground-truth seeds are seed + r + stride·k: more runs than the stride would share seeds.
        _check(self.groundtruth.seeds == 1 or self.runs <= GROUNDTRUTH_SEED_STRIDE,
               f"runs={self.runs} with groundtruth.seeds={self.groundtruth.seeds}: at most "
               f"{GROUNDTRUTH_SEED_STRIDE} runs (their ground-truth seeds would overlap)")
        _positive(self.threads, "threads")
        _check(self.train.steps > 0 or self.groundtruth.mode == "none",
               f"groundtruth.mode={self.groundtruth.mode} trains leave-dataset-out models, which need train.steps > 0 "
               "(train.steps=0: θ0 is the model as given, nothing is trained): give train.steps=<n> or "
               "groundtruth.mode=none")
        self._check_seed()
        _check(bool(self.cache_dir.strip()), "cache_dir is empty: give a folder (the default is outputs/cache)")
        clash = sorted(set(self.data.train) & set(self.testset.subsets))  # names read from files: Experiment
        _check(not clash, f"testset.subsets.{clash[0] if clash else ''} has the name of training dataset "
               f"data.train.{clash[0] if clash else ''}: rename one (results name both by it)")
        _one_of(self.scale, ("cpu", "paper"), "scale")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
               f"device={self.device!r} is not one of auto, cpu, cuda, cuda:N")
        synthetic_data, testset = self.data.kind == "synthetic", self.testset.name
        _check(testset == "files" or synthetic_data == (testset == "synthetic"),
               f"data={self.data.name} cannot be scored on testset={testset}: synthetic data uses "
               "testset=synthetic, pile8 and files use testset=toxigen|winobias|truthfulqa; any data takes testset=files")


    def _check_seed(self) -> None:
        """Every seed derived from ``seed`` (runs, ground-truth seeds: ``largest_seed``) must suit numpy."""
        if self.seed < 0:
            _check(False, f"seed={self.seed} must be >= 0")
        elif largest_seed(self) >= SEED_LIMIT:
            _check(False, f"seed={self.seed} is too large: the largest seed it gives, seed + (runs - 1) + "
                   f"{GROUNDTRUTH_SEED_STRIDE}·(groundtruth.seeds - 1) = {largest_seed(self)}, must be < 2**32")
        _check(0 <= self.data.seed < SEED_LIMIT, f"data.seed={self.data.seed} must be in [0, 2**32)")


def largest_seed(cfg: Config) -> int:
    """The largest training seed a run uses (untrac.groundtruth.truth_seeds; sample seeds are smaller)."""
    runs, seeds = max(cfg.runs, 1), max(cfg.groundtruth.seeds, 1)
    return cfg.seed + runs - 1 + GROUNDTRUTH_SEED_STRIDE * (seeds - 1)


def theta0_text(cfg: Config) -> str:
    """What θ0, the model every method scores, is, in the words summary.md and metrics.json use.
    Weights are loaded for a checkpoint (model=local) and a hub seq2seq model; a causal hub id gives
    only the architecture (untrac.models.build_model)."""
    model, train = cfg.model, cfg.train
    if model.arch == "auto":
        start, weights = f"checkpoint {model.name_or_path}", True
    elif model.name_or_path and model.arch == "seq2seq":
        start, weights = f"{model.name} (pretrained {model.name_or_path})", True
    elif model.pretrain is not None:
        start, weights = f"{model.name} (pretrained {model.pretrain.steps} steps on the stand-in corpus)", True
    else:
        start, weights = model.name, False
    if train.steps == 0:
        return f"{start} {'as saved' if weights else 'at random initialisation'}, not trained (train.steps=0)"
    how = f"{train.epochs} epoch(s)" if cfg.groundtruth.mode == "all_examples" else f"{train.steps} steps"
    return f"{start} finetuned {how}" if weights else f"{start} trained {how} from random init"


def typed_config(node) -> Config:
    """The typed ``Config`` of a composed config (a DictConfig or a plain dict): the one conversion
    of ``run.py`` and ``record.RunRecord.load``, so a run reads back as it ran. Every failed range
    check is reported at once (``untrac.checks.typed``)."""
    from omegaconf import OmegaConf

    from untrac.checks import typed

    node = OmegaConf.create(node) if isinstance(node, dict) else node
    schema = OmegaConf.structured(Config)
    # A saved run is plain YAML: type its method and optimizer sections by their own dataclasses
    # (one per group option), as Hydra does when it composes `method=<name>` / `optim=<name>`.
    name = OmegaConf.select(node, "method.name", default=None)
    if name in SCHEMAS:
        schema.method = OmegaConf.structured(SCHEMAS[name](name=name))
    optim = OPTIMIZERS.get(OmegaConf.select(node, "optim.name", default=None))
    if optim is not None:
        schema.optim = OmegaConf.structured(optim)
    return typed(OmegaConf.merge(schema, node))
