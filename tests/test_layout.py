"""The package's shape: no import cycles, so each stage only reaches down to the ones below it.

Imports are read from the source (not executed); those under ``if TYPE_CHECKING:`` are left out,
since they never run. Imports inside functions count: they are cycles that merely wait.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mnistkit"


def module_name(path: Path, root: Path = PACKAGE) -> tuple[str, bool]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE) -> set[str]:
    """The package's own modules that ``path`` imports at run time."""
    name, is_package = module_name(path, root)
    found: set[str] = set()

    def add(target: str, names: list[str]) -> None:
        for n in names:  # `from pkg import mod` imports the module pkg.mod
            if f"{target}.{n}" in modules:
                found.add(f"{target}.{n}")
            elif target in modules:
                found.add(target)

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for stmt in node.orelse:
                    self.visit(stmt)
            else:
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name in modules)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            add(target, [a.name for a in node.names])

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(name)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = sorted(root.rglob("*.py"))
    modules = {module_name(p, root)[0] for p in files}
    return {module_name(p, root)[0]: imports_of(p, modules, root) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d) :] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "mnistkit.cli" in graph and "mnistkit.training.runner" in graph  # the walk found it
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles_in_functions_and_not_under_type_checking(tmp_path: Path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    graph = import_graph(pkg)
    assert graph["pkg.c"] == set()
    assert find_cycle(graph) in (["pkg.a", "pkg.b", "pkg.a"], ["pkg.b", "pkg.a", "pkg.b"])


def test_every_module_imports_and_no_module_shadows_a_public_name():
    """``import mnistkit.x.y`` for every module, then the public API is still the API: a module
    named like a function (``mnistkit.preprocess`` once was both) would replace it."""
    import importlib
    import inspect

    import mnistkit

    for name in import_graph():
        if not name.endswith("__main__"):  # that one runs the command line
            importlib.import_module(name)
    for name in mnistkit.__all__:
        value = getattr(mnistkit, name)
        assert not inspect.ismodule(value), f"mnistkit.{name} is a module, not the API's {name}"
    assert inspect.isfunction(mnistkit.train) and inspect.isfunction(mnistkit.preprocess)
