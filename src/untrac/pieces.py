"""Finished pieces of a method's scoring kept in the cache, so a killed run redoes only the rest.

A piece is one unlearning trajectory (UnTrac: one training dataset; UnTrac-Inv: one test subset).
Its key holds exactly what determines it: θ0's model key, the method, the unlearned set's tokens,
the evaluated sets' tokens, the optimizer and unlearning schedule, the seed and the dtype. The
number of worker processes is not in it: every worker count gives the same numbers.
"""

import hashlib
from array import array
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from untrac.cache import Cache, make_key

KIND = "pieces"


def tokens_digest(columns: dict[str, list[list[int]]]) -> str:
    """A hash of a tokenised set's contents (its identity for the cache, whatever its name)."""
    h = hashlib.sha256()
    for name in sorted(columns):
        h.update(name.encode())
        for row in columns[name]:
            h.update(len(row).to_bytes(4, "little"))
            h.update(array("q", row).tobytes())
    return h.hexdigest()[:16]


@dataclass
class PieceStore:
    """get/put finished pieces under ``base`` (the fields every piece of this scoring shares)."""

    cache: Cache
    base: dict[str, Any]

    def _fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {**self.base, **fields}

    def get(self, fields: dict[str, Any]) -> dict | None:
        key = make_key(self._fields(fields))
        if not self.cache.has(KIND, key):
            return None
        return json.loads((self.cache.path(KIND, key) / "piece.json").read_text())

    def put(self, fields: dict[str, Any], payload: dict) -> Path:
        def write(tmp: Path) -> None:
            (tmp / "piece.json").write_text(json.dumps(payload))  # floats round-trip exactly via repr

        return self.cache.build(KIND, self._fields(fields), write)
