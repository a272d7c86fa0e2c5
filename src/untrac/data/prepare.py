"""Build the tokenised training datasets and test subsets a run needs, from the config."""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets

from untrac.config import DataConfig, TestsetConfig
from untrac.data.collate import encode_pairs
from untrac.errors import UntracError
from untrac.models import Arch

log = logging.getLogger(__name__)


@dataclass
class Task:
    train: dict[str, datasets.Dataset]  # full training datasets, in a fixed order
    test: dict[str, datasets.Dataset]  # test subsets


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


def load_task(data: DataConfig, testset: TestsetConfig, tokenizer, arch: Arch, cache_dir: Path) -> Task:
    if data.kind == "synthetic":
        from untrac.data import synthetic

        text = (synthetic.load_csv(data.variant, data.root) if data.source == "csv"
                else synthetic.generate(data.variant, seed=data.seed, n=data.n_per_dataset))
        train = {name: encode_pairs(tokenizer, pairs, arch) for name, pairs in text.train.items()}
        test = {name: encode_pairs(tokenizer, pairs, arch) for name, pairs in text.test.items()}
    else:
        from untrac.data.corpora import load_pile8
        from untrac.data.testsets import load_testset

        # The test set first: it is quick, so a bad test file fails before corpora are tokenised.
        subsets = load_testset(testset.name, testset.source, testset.root, testset.per_subset, data.seed)
        sizes = pile8_sizes(data)
        train = load_pile8(list(sizes), sizes, data.source, data.root, data.block_size, tokenizer,
                           data.seed, Path(cache_dir) / "corpora")
        if testset.max_subsets:
            subsets = dict(list(subsets.items())[:testset.max_subsets])
        test = {name: encode_pairs(tokenizer, pairs, arch) for name, pairs in subsets.items()}
    _check_nonempty(train, "training dataset")
    _check_nonempty(test, "test subset")
    return Task(train=train, test=test)


def data_key(data: DataConfig) -> dict:
    """The fields of the data config that determine the training data (for cache keys)."""
    fields = asdict(data)
    fields.pop("runs_vary")
    return fields


def sample(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """``n`` examples drawn without replacement (all of them when ``n`` is None or ≥ the size)."""
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))
