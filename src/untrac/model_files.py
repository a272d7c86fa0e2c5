"""Checks of a model's and a tokenizer's names and files, made before transformers reads them.

transformers accepts much that gives a wrong answer later: a folder without tokenizer files becomes an
empty tokenizer, a typo in a path becomes a hub lookup that blames the tokenizer, and a config with
``auto_map`` makes it ask on the terminal whether to run the folder's own code. Each is one line here.
"""

import json
import socket
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import PretrainedConfig

from untrac.config import ModelConfig
from untrac.errors import UntracError


def needs_hub(name: str) -> bool:
    """True when ``name`` is not a local directory and is not in the local Hugging Face cache."""
    if Path(name).is_dir():
        return False
    try:
        huggingface_hub.snapshot_download(name, local_files_only=True, allow_patterns=["config.json"])
        return False
    except Exception:  # noqa: BLE001 - any failure means "not available locally"
        return True


def hub_reachable(timeout: float = 3.0) -> bool:
    """Fail fast offline: the hub client would otherwise retry for about half a minute."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(huggingface_hub.constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_available(what: str, name: str, key: str) -> None:
    if needs_hub(name) and not hub_reachable():
        raise UntracError(f"cannot load {what} {name!r}: not a local directory, not in the local cache, and the "
                          f"hub is unreachable; set {key}=<local directory with the files> "
                          "or use a tiny preset (model=t5_tiny|opt_tiny)")


def offline_hint(what: str, name: str, key: str, err: Exception) -> UntracError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UntracError(f"cannot load {what} {name!r} (hub unreachable and no local copy: {reason[:160]}); "
                       f"set {key}=<local directory with the files> or use a tiny preset (model=t5_tiny|opt_tiny)")


def one_line(err: Exception) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:200]  # one line


# What AutoTokenizer reads; a folder with none of them gets an empty tokenizer, not an error.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model", "vocab.json",
                   "vocab.txt", "sentencepiece.bpe.model")
PROBE = "The quick brown fox, 42 times."  # any tokenizer of text gives it at least one ordinary token


def _looks_like_path(name: str) -> bool:
    """A local path rather than a hub id (``owner/name``): ./x, ~/x, /x, a/b/c."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return name.startswith((".", "~"))


def check_model_path(cfg: ModelConfig) -> None:
    """``model.name_or_path`` names a folder that exists, or a hub id: a typo blames the setting, not the
    tokenizer (which defaults to the same name and is loaded first)."""
    name = cfg.name_or_path
    if not name or Path(name).is_dir():
        return
    if cfg.arch == "auto" or _looks_like_path(name):
        hint = (" (~ is not expanded here: give the full path)" if name.startswith("~") else
                " (model=local loads a checkpoint folder written by save_pretrained)" if cfg.arch == "auto" else "")
        raise UntracError(f"model.name_or_path={name}: no such folder{hint}")
    if cfg.tokenizer == name:
        check_available("model", name, "model.name_or_path")


def _cached(repo: str, name: str) -> str | None:
    """The local-cache copy of a hub repo's file, if there is one (a hub id's folder)."""
    try:
        path = huggingface_hub.try_to_load_from_cache(repo, name)
    except (HFValidationError, ValueError):
        return None
    return path if isinstance(path, str) else None


def refuse_remote_code(cfg: ModelConfig) -> None:
    """A checkpoint folder (or a cached hub repo) whose config names its own Python classes (``auto_map``)
    is refused before transformers sees it: with trust_remote_code unset it asks on the terminal and runs
    the code on 'y'; every load also passes trust_remote_code=False."""
    folders = {"model.name_or_path": cfg.name_or_path, "model.tokenizer": cfg.tokenizer}
    for key, folder in folders.items():
        if not folder or folder in ("byt5", "standin"):  # built in code, no files
            continue
        for name in ("config.json", "tokenizer_config.json"):
            path = Path(folder) / name if Path(folder).is_dir() else _cached(folder, name)
            try:
                custom = "auto_map" in json.loads(Path(path).read_text())
            except (OSError, ValueError, TypeError):
                continue  # absent or unreadable: the loader reports it
            if custom:
                raise UntracError(f"{key}={folder}: {name} has auto_map (the checkpoint's own Python code), which "
                                  "untrac never runs (trust_remote_code=False); save it with a transformers "
                                  "model class (save_pretrained) instead")


def check_tokenizer(tokenizer, key: str, value: str):
    """A tokenizer that turns text into no ordinary token (an empty one, built from a folder without its
    files) would give empty examples and identical scores: refuse it."""
    ids = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    if not any(i not in special for i in ids):
        raise UntracError(f"{key}={value}: the tokenizer encodes text to no ordinary token ({PROBE!r} → {ids}); "
                          "set model.tokenizer=<folder with the checkpoint's tokenizer files> or byt5")
    return tokenizer


def check_vocab_fits(cfg: ModelConfig, tokenizer, config: PretrainedConfig) -> None:
    """Every token id the tokenizer can give must index a row of the model's embedding."""
    rows = getattr(config, "vocab_size", None)
    if rows is not None and len(tokenizer) > rows:
        raise UntracError(f"model.tokenizer={cfg.tokenizer} has {len(tokenizer)} tokens but the model at "
                          f"{cfg.name_or_path} embeds {rows}: use the checkpoint's own tokenizer")
