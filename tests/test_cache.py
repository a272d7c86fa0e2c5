import json
import os

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
