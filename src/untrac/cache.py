"""Keyed artifacts on disk: θ0, each θ−Z, TracIn checkpoints, token streams and blocks.

An entry lives at ``<root>/<kind>/<key>/`` where ``key`` hashes exactly the config fields that
determine the artifact, so different methods share one θ0 and an interrupted run resumes where
it stopped. Entries are built in a temporary folder and renamed into place when complete, with a
``manifest.json`` of the fields that made the key and the size and SHA-256 of every file: a
killed process never leaves a half entry, and a file damaged later (a full disk, a copy cut
short, a file added or left out, an entry copied under another key) is detected on first use,
moved aside with a warning, and rebuilt.

One process builds an entry at a time: ``build`` holds a file lock per entry (``hold``), and a
second process asking for the same entry waits, then uses what the first built. A temporary
folder exists only while its builder holds the entry's lock, so one found by the next holder was
left by a killed process and is removed: no guess about its age or its owner's pid, which would
fail for a long build or on a cluster sharing the cache. (``scratch`` folders belong to no entry:
they name their host and pid instead.)

Model weights are stored as safetensors (no pickle: loading a cache entry runs no code).
"""

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCKS = ".locks"  # <root>/.locks/<kind>.<key>.lock, beside the kinds: listing a kind shows entries only
# Bump when the meaning or format of a cached artifact changes (training loop, loss, file format).
CACHE_VERSION = 2


def make_key(fields: dict[str, Any]) -> str:
    """A short stable hash of ``fields`` (order-independent)."""
    blob = json.dumps({"cache_version": CACHE_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST]


def _inventory(folder: Path) -> dict[str, dict]:
    return {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in _files(folder)}


def _damage(folder: Path, kind: str, key: str) -> str | None:
    """What is wrong with the entry published as ``kind/key`` (None: intact): an unreadable manifest,
    a manifest made for another entry, a file missing, changed, or not in the manifest."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files, made_for = manifest["files"], (manifest["kind"], manifest["key"], make_key(manifest["fields"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable manifest ({type(err).__name__})"
    if made_for != (kind, key, key):
        return f"its manifest is for {made_for[0]}/{made_for[1]} (fields hashing to {made_for[2]})"
    unlisted = sorted({str(p.relative_to(folder)) for p in _files(folder)} - set(files))
    if unlisted:
        return f"{unlisted[0]} is not in its manifest"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want["bytes"] or _sha256(path) != want["sha256"]:
            return f"{name} does not match its checksum"
    return None


def _owner_gone(folder: Path) -> bool:
    """Whether the process named in a ``.scratch.<pid>.<host>.*`` folder is provably dead: on this
    host and no longer running (a folder of another host, or of a reused pid, is kept)."""
    _, _, pid, rest = (folder.name.split(".", 3) + ["", "", "", ""])[:4]
    if not pid.isdigit() or not rest.startswith(socket.gethostname() + "."):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. another user's process: alive
        return False
    return False


class Cache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._verified: set[Path] = set()  # entries checked in this process: hash each file once

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        """Whether an intact entry exists; a damaged one is moved aside (and so is absent)."""
        folder = self.path(kind, key)
        if folder in self._verified:
            return True
        if not folder.is_dir():
            return False
        problem = _damage(folder, kind, key) if (folder / MANIFEST).exists() else "no manifest"
        if problem is None:
            self._verified.add(folder)
            return True
        aside = folder.with_name(f"{folder.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        try:
            os.rename(folder, aside)
        except FileNotFoundError:  # another process moved it aside first
            return False
        log.warning("cache entry %s/%s is damaged (%s): moved to %s, rebuilding", kind, key, problem, aside)
        return False

    @contextmanager
    def hold(self, kind: str, key: str) -> Iterator[None]:
        """Hold entry ``kind/key``'s lock (re-entrant in a process); a second holder waits.

        The first acquisition removes the entry's temporary folders: their builders held this lock
        while they existed, so whatever is left was left by a killed process.
        """
        (self.root / LOCKS).mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.root / LOCKS / f"{kind}.{key}.lock", is_singleton=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another process building %s %s", kind, key)
            lock.acquire()
        try:
            if lock.lock_counter == 1:
                for stale in self.path(kind, key).parent.glob(f".{key}.*"):
                    log.info("removing %s, left by a process that was stopped while building it", stale)
                    shutil.rmtree(stale, ignore_errors=True)
            yield
        finally:
            lock.release()

    def build(self, kind: str, fields: dict[str, Any], write: Callable[[Path], None]) -> Path:
        """Return the entry for ``fields``, calling ``write(tmp_dir)`` to create it if missing."""
        key = make_key(fields)
        final = self.path(kind, key)
        if self.has(kind, key):
            return final
        with self.hold(kind, key):
            if self.has(kind, key):
                log.info("%s %s: built by another process while this one waited; using it", kind, key)
                return final
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
            try:
                write(tmp)
                manifest = {"kind": kind, "key": key, "fields": fields, "files": _inventory(tmp)}
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
                try:
                    os.rename(tmp, final)  # atomic: the entry appears complete or not at all
                except OSError:
                    if not self.has(kind, key):  # built meanwhile only where the lock is a no-op
                        raise
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        self._verified.add(final)
        return final

    def scratch(self) -> tempfile.TemporaryDirectory:
        """A work folder on the cache's filesystem, for intermediates an entry is built from.

        Named after its host and pid, so that one left by a killed process is removed by the next
        ``scratch`` on the same host (no lock covers it: it belongs to no entry).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for old in self.root.glob(".scratch.*"):
            if _owner_gone(old):
                shutil.rmtree(old, ignore_errors=True)
        return tempfile.TemporaryDirectory(prefix=f".scratch.{os.getpid()}.{socket.gethostname()}.",
                                           dir=self.root, ignore_cleanup_errors=True)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's parameters and buffers as safetensors (tied weights stored once)."""
    from safetensors.torch import save_model

    save_model(model, str(path))


def load_weights(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load ``save_weights``' file into ``model`` (same architecture); every tensor must match."""
    from safetensors.torch import load_model

    load_model(model, str(path), strict=True, device=str(next(model.parameters()).device))
    return model


def identity(path: str | Path) -> dict[str, Any]:
    """What identifies a user's file or folder on disk, for cache keys: its resolved path and the size
    and mtime of every file in it, so an edited file is not served stale from the cache."""
    path = Path(path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {"path": str(path), "files": [[str(p.relative_to(path)) if p != path else p.name,
                                          p.stat().st_size, p.stat().st_mtime_ns] for p in files]}
