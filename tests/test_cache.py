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
