"""Build the tokenised training datasets and test subsets a run needs, from the config."""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets

from untrac.arch import Arch
from untrac.config import DataConfig, TestsetConfig
from untrac.data.collate import IGNORE, encode_pairs
from untrac.errors import UntracError

log = logging.getLogger(__name__)


@dataclass
class Task:
    train: dict[str, datasets.Dataset]  # full training datasets, in a fixed order
    test: dict[str, datasets.Dataset]  # test subsets


def _check_targets_fit(test: dict[str, datasets.Dataset], arch: Arch) -> None:
    """A test pair whose prompt fills the model's positions would score no token (a loss of 0)."""
    for name, ds in test.items():
        if arch.kind == "causal" and (lost := sum(all(t == IGNORE for t in labels) for labels in ds["labels"])):
            raise UntracError(f"test subset {name!r}: {lost} of its rows keep no target token within the model's "
                              f"{arch.max_length} positions (their prompts fill them); shorten those prompts")


def _check_nonempty(sets: dict[str, datasets.Dataset], what: str) -> None:
    if not sets:
        raise UntracError(f"{what}: no datasets")
    for name, ds in sets.items():
        if len(ds) == 0:
            raise UntracError(f"{what} {name!r} is empty")


def pile8_sizes(cfg: DataConfig) -> dict[str, int]:
    """Blocks per corpus: the paper's equal/different sizes (§5.2) times ``size_scale``, or custom."""
    from untrac.data.corpora import CORPORA, PAPER_SIZES

    if cfg.sizes == "custom":
        unknown = set(cfg.custom_sizes) - set(CORPORA)
        if unknown:
            raise UntracError(f"data.custom_sizes names unknown corpora: {sorted(unknown)}")
        return dict(cfg.custom_sizes)
    return {name: max(1, round(n * cfg.size_scale)) for name, n in PAPER_SIZES[cfg.sizes].items()}


def _test_pairs(testset: TestsetConfig, seed: int, cache_dir: Path) -> dict:
    if testset.name == "files":
        from untrac.data.files import load_test

        return load_test(testset, seed, cache_dir)
    from untrac.data.testsets import load_testset

    return load_testset(testset.name, testset.source, testset.root, testset.per_subset, seed)


def _synthetic_text(data: DataConfig):
    from untrac.data import synthetic

    return (synthetic.load_csv(data.variant, data.root) if data.source == "csv"
            else synthetic.generate(data.variant, seed=data.seed, n=data.n_per_dataset))


def _corpora(data: DataConfig, tokenizer, arch: Arch, cache_dir: Path) -> dict[str, datasets.Dataset]:
    if data.kind == "files":
        from untrac.data.files import load_train

        return load_train(data, tokenizer, arch, cache_dir)
    from untrac.data.corpora import BlockSpec, TextSource, load_pile8

    sizes = pile8_sizes(data)
    return load_pile8(list(sizes), sizes, BlockSpec(tokenizer, data.block_size, seed=data.seed),
                      TextSource(data.source, data.root, seed=data.seed), Path(cache_dir) / "corpora")


def load_train(data: DataConfig, tokenizer, arch: Arch, cache_dir: Path) -> dict[str, datasets.Dataset]:
    """The tokenised training datasets alone (what ``untrac.store`` trains a model from)."""
    if data.kind == "synthetic":
        train = {name: encode_pairs(tokenizer, pairs, arch) for name, pairs in _synthetic_text(data).train.items()}
    else:
        train = _corpora(data, tokenizer, arch, cache_dir)
    _check_nonempty(train, "training dataset")
    return train


def dataset_names(data: DataConfig) -> list[str] | None:
    """The training datasets' names without tokenising anything; None where only the data knows
    them (``data=files`` split by ``group_column``)."""
    if data.kind == "synthetic":
        return list(_synthetic_text(data).train)
    if data.kind == "files":
        return list(data.train) or None
    return list(pile8_sizes(data))


def load_task(data: DataConfig, testset: TestsetConfig, tokenizer, arch: Arch, cache_dir: Path) -> Task:
    if data.kind == "synthetic":
        text = _synthetic_text(data)
        subsets = text.test if testset.name == "synthetic" else _test_pairs(testset, data.seed, cache_dir)
        train = {name: encode_pairs(tokenizer, pairs, arch) for name, pairs in text.train.items()}
    else:
        # The test set first: it is quick, so a bad test file fails before corpora are tokenised.
        subsets = _test_pairs(testset, data.seed, cache_dir)
        train = _corpora(data, tokenizer, arch, cache_dir)
    if testset.max_subsets:
        subsets = dict(list(subsets.items())[:testset.max_subsets])
    # testset=files' separator; the paper's test sets keep their prompts' own ending ("").
    from untrac.data.files import separator as files_separator

    separator = files_separator(testset.separator) if testset.name == "files" else ""
    test = {name: encode_pairs(tokenizer, pairs, arch, separator=separator) for name, pairs in subsets.items()}
    if testset.name == "files":
        _check_targets_fit(test, arch)
    _check_nonempty(train, "training dataset")
    _check_nonempty(test, "test subset")
    return Task(train=train, test=test)


FILES_FIELDS = ("train", "path", "group_column", "text_column", "prompt_column", "target_column", "max_length",
                "separator", "txt_unit")


def data_key(data: DataConfig) -> dict:
    """The fields of the data config that determine the training data (for cache keys); for
    ``data=files`` also the size and mtime of the files, so an edited file is not served stale."""
    fields = asdict(data)
    fields.pop("runs_vary")
    if data.kind != "files":  # keys of synthetic and pile8 runs stay what they were before files existed
        return {k: v for k, v in fields.items() if k not in FILES_FIELDS}
    from untrac.data.files import files_key

    return fields | files_key(data)


def sample(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """``n`` examples drawn without replacement (all of them when ``n`` is None or ≥ the size)."""
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))
