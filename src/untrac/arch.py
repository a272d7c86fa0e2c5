"""``Arch``: what the loss and data code need to know about a model besides its weights.

Its own module, below both ``untrac.models`` (which reads it from a tokenizer and config) and
``untrac.data`` (which encodes examples for it), so that neither imports the other for it.
"""

from dataclasses import dataclass


@dataclass
class Arch:
    """What the loss code needs to know about a model besides its weights."""

    kind: str  # seq2seq | causal
    pad_id: int
    eos_id: int
    max_length: int
