"""The house rules of the package, read from the source with ``ast`` (nothing is imported): Hydra
only at the two entry points, no module importing one above it, no import circle, no function
with more than six parameters (typed specs instead)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "untrac"
ENTRY_POINTS = {"untrac/run.py", "untrac/paper/plan.py"}  # python -m untrac.run; python -m untrac.paper's planner


def _modules() -> dict[str, ast.Module]:
    """Every module of the package by its path below src/ (``untrac/paper/plan.py``), parsed."""
    return {path.relative_to(PACKAGE.parent).as_posix(): ast.parse(path.read_text(), str(path))
            for path in sorted(PACKAGE.rglob("*.py"))}


def _dotted(path: str) -> str:
    """``untrac/paper/plan.py`` → ``untrac.paper.plan``; a package's ``__init__.py`` is the package."""
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _imported(path: str, tree: ast.Module) -> set[str]:
    """The dotted names a module imports anywhere, at its top or inside a function: ``import a.b``
    gives a.b; ``from a import b`` gives a and a.b (b may be a module or a name); relative imports resolved."""
    here = _dotted(path).split(".")
    package = here if path.endswith("__init__.py") else here[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = [*package[:len(package) - node.level + 1], *filter(None, [node.module])] if node.level else [node.module]
            base = ".".join(parts)
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def _is(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def test_only_the_two_entry_points_import_hydra():
    """Every other module is given values, not Hydra objects, and sees Hydra's errors as UntracError
    (``untrac.paper.plan.one_line_errors``)."""
    importing = {path for path, tree in _modules().items()
                 if any(_is(name, "hydra") or _is(name, "hydra_plugins") for name in _imported(path, tree))}
    assert importing == ENTRY_POINTS


def test_no_module_imports_one_above_it():
    """Layers, bottom up: the library (every other module), ``run.py``, ``paper/``. A library module
    never imports ``untrac.run`` or ``untrac.paper``; ``run.py`` never imports ``untrac.paper``."""
    upward = []
    for path, tree in _modules().items():
        if path.startswith("untrac/paper/"):
            continue
        above = ["untrac.paper"] + ([] if path == "untrac/run.py" else ["untrac.run"])
        upward += [f"{path} imports {name}" for name in sorted(_imported(path, tree))
                   if any(_is(name, module) for module in above)]
    assert not upward


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph (its modules in order, the first again at the end), or [] if none."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return []
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt, path + [node])
            if found:
                return found
        done.add(node)
        return []

    return next((found for node in sorted(graph) if (found := visit(node, []))), [])


def test_no_import_circle():
    """Package modules importing package modules (inside functions too; a submodule import also
    imports its package): no chain of them leads back to where it started."""
    modules = _modules()
    known = {_dotted(path) for path in modules}
    graph = {_dotted(path): {name for name in _imported(path, tree) if name in known} - {_dotted(path)}
             for path, tree in modules.items()}
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the search finds one
    assert _cycle(graph) == []


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Every parameter a caller can pass (positional, keyword-only, *args, **kwargs); not self or cls."""
    args = node.args
    names = [*args.posonlyargs, *args.args, *args.kwonlyargs, *filter(None, [args.vararg, args.kwarg])]
    return len(names) - (1 if args.args and args.args[0].arg in ("self", "cls") else 0)


def test_no_function_takes_more_than_six_parameters():
    """Beyond six, the values travel together as a typed spec (UnlearnPlan, GradientSettings,
    RunReport, BlockSpec, …) that names what they are for."""
    crowded = [f"{path}:{node.lineno} {node.name} ({_parameters(node)})" for path, tree in _modules().items()
               for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
               and _parameters(node) > 6]
    assert not crowded
