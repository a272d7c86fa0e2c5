"""Keyed artifacts on disk: θ0, each θ−Z, TracIn checkpoints, tokenised corpora.

An entry lives at ``<root>/<kind>/<key>/`` where ``key`` hashes exactly the config fields that
determine the artifact, so different methods share one θ0 and an interrupted run resumes where
it stopped. Entries are built in a temporary folder and renamed into place when complete, with a
``manifest.json`` of the fields that made the key: a killed process never leaves a half entry.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Bump when the meaning of a cached artifact changes (training loop, loss definition, ...).
CACHE_VERSION = 1


def make_key(fields: dict[str, Any]) -> str:
    """A short stable hash of ``fields`` (order-independent)."""
    blob = json.dumps({"cache_version": CACHE_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Cache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        return (self.path(kind, key) / MANIFEST).is_file()

    def build(self, kind: str, fields: dict[str, Any], write: Callable[[Path], None]) -> Path:
        """Return the entry for ``fields``, calling ``write(tmp_dir)`` to create it if missing."""
        key = make_key(fields)
        final = self.path(kind, key)
        if self.has(kind, key):
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
            write(tmp)
            (tmp / MANIFEST).write_text(json.dumps({"kind": kind, "key": key, "fields": fields},
                                                   indent=2, sort_keys=True, default=str))
            try:
                os.rename(tmp, final)
            except OSError:
                if not self.has(kind, key):  # lost a race only if another process finished it
                    raise
                log.info("another process finished %s/%s first; using theirs", kind, key)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final
