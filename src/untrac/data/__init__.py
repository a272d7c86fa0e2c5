"""Datasets as plain text pairs, before tokenisation.

Every data source (synthetic tasks, pretraining corpora, test sets) yields ``Pair``s:
``(prompt, target)``. The loss is taken on the target tokens only; a pretraining block or a
test sentence whose every token counts has an empty prompt.
"""

from dataclasses import dataclass, field

Pair = tuple[str, str]


@dataclass
class TextData:
    """Named training datasets and named test subsets, each a list of pairs."""

    train: dict[str, list[Pair]] = field(default_factory=dict)
    test: dict[str, list[Pair]] = field(default_factory=dict)
