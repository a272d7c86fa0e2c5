import json
import os
import time
from pathlib import Path

import pytest

from untrac.cache import Cache, make_key


def test_key_depends_on_every_field_but_not_on_order():
    assert make_key({"a": 1, "b": [1, 2]}) == make_key({"b": [1, 2], "a": 1})
    assert make_key({"a": 1}) != make_key({"a": 2})
    assert make_key({"a": 1}) != make_key({"a": 1, "exclude": None})


def test_build_writes_once_with_manifest(tmp_path):
    cache, calls = Cache(tmp_path), []

    def write(folder):
        calls.append(folder)
        (folder / "x.txt").write_text("hello")

    first = cache.build("models", {"seed": 0}, write)
    second = cache.build("models", {"seed": 0}, write)
    assert first == second and len(calls) == 1
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["fields"] == {"seed": 0} and manifest["kind"] == "models"
    assert (first / "x.txt").read_text() == "hello"


def test_a_failed_write_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path)

    def broken(folder):
        (folder / "partial.bin").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.build("models", {"seed": 1}, broken)
    assert not cache.has("models", make_key({"seed": 1}))
    assert os.listdir(tmp_path / "models") == []


def _entry(cache, seed=2, content="weights"):
    return cache.build("models", {"seed": seed}, lambda folder: (folder / "w.bin").write_text(content))


@pytest.mark.parametrize("damage", ["truncate", "delete", "manifest"])
def test_a_damaged_entry_is_moved_aside_and_rebuilt(tmp_path, caplog, damage):
    entry = _entry(Cache(tmp_path))
    if damage == "truncate":
        (entry / "w.bin").write_text("weig")
    elif damage == "delete":
        (entry / "w.bin").unlink()
    else:
        (entry / "manifest.json").write_text("{not json")
    fresh, calls = Cache(tmp_path), []  # a new process: nothing verified yet
    rebuilt = fresh.build("models", {"seed": 2},
                          lambda folder: calls.append(1) or (folder / "w.bin").write_text("weights"))
    assert calls == [1] and (rebuilt / "w.bin").read_text() == "weights"
    aside = [p.name for p in (tmp_path / "models").iterdir() if ".damaged-" in p.name]
    assert len(aside) == 1 and aside[0].startswith(make_key({"seed": 2}))
    assert "is damaged" in caplog.text and aside[0] in caplog.text


def test_manifest_records_size_and_checksum_of_every_file(tmp_path):
    import hashlib

    entry = _entry(Cache(tmp_path), content="abc")
    files = json.loads((entry / "manifest.json").read_text())["files"]
    assert files == {"w.bin": {"bytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}}
    assert Cache(tmp_path).has("models", make_key({"seed": 2}))  # intact: verified, not moved


def test_weights_round_trip_through_safetensors_with_tied_embeddings(tmp_path):
    import torch

    from untrac.cache import load_weights, save_weights
    from untrac.config import ModelConfig
    from untrac.models import build_model, load_tokenizer

    cfg = ModelConfig()
    model, _ = build_model(cfg, load_tokenizer(cfg), seed=0)
    save_weights(model, tmp_path / "m.safetensors")
    other, _ = build_model(cfg, load_tokenizer(cfg), seed=1)
    load_weights(other, tmp_path / "m.safetensors")
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name


def _rebuilt(tmp_path, seed=2):
    """Look ``{"seed": seed}`` up as a new process would; the write calls it made."""
    calls = []
    entry = Cache(tmp_path).build("models", {"seed": seed},
                                  lambda folder: calls.append(1) or (folder / "w.bin").write_text("weights"))
    return entry, calls


def test_a_file_left_out_of_the_manifest_makes_the_entry_damaged(tmp_path, caplog):
    """Issue 17: a manifest that omits a file was trusted, and the file served unchecked."""
    entry = _entry(Cache(tmp_path))
    (entry / "ground_truth.csv").write_text("wrong")
    rebuilt, calls = _rebuilt(tmp_path)
    assert calls == [1] and not (rebuilt / "ground_truth.csv").exists()
    assert "ground_truth.csv is not in its manifest" in caplog.text


def test_an_entry_copied_from_another_key_is_damaged(tmp_path, caplog):
    """Issue 17: another key's files under this key were trusted; the manifest names its own key."""
    cache = Cache(tmp_path)
    other, wanted = _entry(cache, seed=3, content="seed 3"), cache.path("models", make_key({"seed": 2}))
    os.rename(other, wanted)
    rebuilt, calls = _rebuilt(tmp_path)
    assert calls == [1] and (rebuilt / "w.bin").read_text() == "weights"
    assert f"its manifest is for models/{make_key({'seed': 3})}" in caplog.text


def test_an_entry_whose_manifest_key_was_edited_to_match_is_damaged(tmp_path, caplog):
    """The recorded fields must hash to the key too: renaming the folder and its manifest's key is not enough."""
    cache = Cache(tmp_path)
    other, wanted = _entry(cache, seed=3, content="seed 3"), make_key({"seed": 2})
    manifest = json.loads((other / "manifest.json").read_text()) | {"key": wanted}
    (other / "manifest.json").write_text(json.dumps(manifest))
    os.rename(other, cache.path("models", wanted))
    rebuilt, calls = _rebuilt(tmp_path)
    assert calls == [1] and (rebuilt / "w.bin").read_text() == "weights"
    assert f"fields hashing to {make_key({'seed': 3})}" in caplog.text


def test_a_second_builder_waits_for_the_first_and_uses_its_entry(tmp_path, caplog):
    """Issue 17: three identical runs at once each trained the models; now one writes, the others wait."""
    import logging
    import threading

    caplog.set_level(logging.INFO, logger="untrac.cache")
    started, calls, paths = threading.Event(), [], []

    def slow_write(folder):
        calls.append(folder)
        started.set()
        time.sleep(0.5)  # the second builder arrives while this one holds the entry
        (folder / "w.bin").write_text("weights")

    first = threading.Thread(target=lambda: paths.append(Cache(tmp_path).build("models", {"seed": 2}, slow_write)))
    first.start()
    assert started.wait(10)
    paths.append(Cache(tmp_path).build("models", {"seed": 2}, slow_write))  # a Cache of its own, as in another process
    first.join()
    assert len(calls) == 1 and paths[0] == paths[1] and (paths[1] / "w.bin").read_text() == "weights"
    assert f"waiting for another process building models {make_key({'seed': 2})}" in caplog.text


def test_folders_left_by_a_killed_builder_are_removed(tmp_path):
    """A build's temporary folder exists only while its builder holds the entry's lock; a scratch
    folder names its host and pid. Both are removed once their owner is known to be gone."""
    import socket
    import subprocess
    import sys

    cache, key = Cache(tmp_path), make_key({"seed": 2})
    left = tmp_path / "models" / f".{key}.killed"
    left.mkdir(parents=True)
    (left / "w.bin").write_text("half")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    orphan = tmp_path / f".scratch.{dead}.{socket.gethostname()}.x"
    elsewhere = tmp_path / f".scratch.{dead}.another-host.x"  # its owner may be running there
    orphan.mkdir(), elsewhere.mkdir()
    _entry(cache)
    assert not left.exists() and sorted(p.name for p in (tmp_path / "models").iterdir()) == [key]
    with cache.scratch() as work:
        assert Path(work).is_dir() and not orphan.exists() and elsewhere.exists()


def test_a_damaged_piece_is_redone(tmp_path):
    """Finished unlearning runs are cache entries: a changed piece.json is not served."""
    from untrac.pieces import KIND, PieceStore

    store = PieceStore(Cache(tmp_path), {"theta0": "k"})
    entry = store.put({"set": "a"}, {"loss": [0.5, 0.25]})
    assert PieceStore(Cache(tmp_path), {"theta0": "k"}).get({"set": "a"}) == {"loss": [0.5, 0.25]}
    (entry / "piece.json").write_text('{"loss": [0.5, 0.2]}')
    assert PieceStore(Cache(tmp_path), {"theta0": "k"}).get({"set": "a"}) is None
    assert [p.name for p in (tmp_path / KIND).iterdir() if ".damaged-" in p.name]
