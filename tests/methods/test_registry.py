"""The method plugin contract: one registry of names, duplicates refused, declarations checked."""

import pytest

from untrac import methods
from untrac.config import MethodConfig
from untrac.errors import UntracError
from untrac.methods import Method, Needs, PoolConfig, get, register, registry


@pytest.fixture
def scratch(monkeypatch):
    """A registry of its own, so the toy methods of a test do not leak into the others."""
    monkeypatch.setattr(methods, "_REGISTRY", dict(registry()))


def score(context):
    raise AssertionError("not called")


def test_every_shipped_method_is_found_without_being_listed():
    """Discovery reads the package, not a list: exactly the modules that register a method are the
    registered methods' modules, and the registered names are exactly the conf/method/ options built
    on a method schema (presets such as hif_arnoldi_pile8 build on another option). No name is spelled."""
    import importlib.util
    import pkgutil
    from pathlib import Path

    import yaml

    found = registry()
    registering = {f"untrac.methods.{m.name}" for m in pkgutil.iter_modules(methods.__path__)
                   if "register(Method(" in Path(importlib.util.find_spec(f"untrac.methods.{m.name}").origin).read_text()}
    assert {method.score.__module__ for method in found.values()} == registering
    schema_options = set()
    for path in (Path(__file__).resolve().parents[2] / "conf" / "method").glob("*.yaml"):
        for entry in yaml.safe_load(path.read_text())["defaults"]:
            if isinstance(entry, str) and entry.startswith("/method_schema/"):
                assert entry == f"/method_schema/{path.stem}@method", path.name
                schema_options.add(path.stem)
    assert set(found) == schema_options


def test_a_duplicate_name_is_refused(scratch):
    register(Method("toy", MethodConfig, score))
    with pytest.raises(UntracError, match="'toy' is registered twice"):
        register(Method("toy", MethodConfig, score))
    with pytest.raises(UntracError, match="'graddot' is registered twice"):
        register(Method("graddot", MethodConfig, score))


def test_a_pool_method_needs_a_pool_config(scratch):
    with pytest.raises(UntracError, match="must subclass PoolConfig"):
        register(Method("toy_pool", MethodConfig, score, Needs(pool=True)))
    register(Method("toy_pool", PoolConfig, score, Needs(pool=True)))


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(UntracError, match="method='nosuch' is not one of .*graddot"):
        get("nosuch")


def test_settings_are_the_method_type_or_the_bare_base():
    hif = get("hif_lissa")
    assert hif.settings(MethodConfig(name="hif_lissa")) == hif.config(name="hif_lissa")  # Config() built in Python
    with pytest.raises(UntracError, match="method=hif_lissa takes a LissaConfig"):
        hif.settings(get("graddot").config(name="graddot"))


def test_damping_has_one_rule_for_every_pool_method():
    """``PoolConfig`` alone decides damping: > 0 for every method with a Hessian pool (hif_* and ekfac
    today), the same line for each. The authors' undamped LiSSA/Arnoldi needs no 0 here: it ignores
    method.damping (``test_hif.py::test_authors_lissa_is_the_undamped_exact_hessian_recursion``)."""
    pooled = sorted(name for name, m in registry().items() if issubclass(m.config, PoolConfig))
    assert {"hif_lissa", "hif_arnoldi", "ekfac"} <= set(pooled)
    for name in pooled:
        for bad in (0.0, -1e-3):
            with pytest.raises(UntracError, match=rf"^method\.damping must be > 0 for {name} \(curvature \+ "
                                                  rf"damping·I must be positive definite\), got {bad}$"):
                get(name).config(name=name, damping=bad)
        assert get(name).config(name=name, damping=1e-8).damping == 1e-8
    for name in ("hif_lissa", "hif_arnoldi"):
        assert get(name).config(name=name, variant="authors").variant == "authors"
