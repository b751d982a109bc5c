"""The house's floor plan, drawn from the code itself: short modules, imports that point one way.

- No module of ``verifier/`` or ``deploy/`` is over :data:`MAX_LINES` lines.
- No import cycle at run time between project modules. The graph is read
  with :mod:`ast`, not by importing: every ``import`` and ``from … import``
  counts, function-local ones included (they run, only later), except those
  under ``if TYPE_CHECKING:`` (they never run). Relative imports are resolved;
  ``from pkg import name`` is an edge to ``pkg.name`` when that is a module,
  else to ``pkg``.
- The verify path imports no HTTP client: ``import verifier.tokens`` and
  ``from verifier import TokenVerifier``, each in a fresh interpreter, leave
  ``httpx2`` out of ``sys.modules``.

Issues 24 and 25 split the long modules and broke the cycles; every check
holds. The graph reader itself is tested on small packages written to
``tmp_path``, so the checks cannot pass by reading nothing.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

#: The packages whose modules the checks cover.
PACKAGES = ("verifier", "deploy")
#: The longest a module may be (issue 25: "no module over 600 lines, aim lower").
MAX_LINES = 600


Graph = dict[str, set[str]]


# -- reading the import graph ---------------------------------------------------------------


def module_names(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """``dotted.name -> path`` for every ``.py`` file of ``packages`` under ``root``."""
    names = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: all of them but ``if TYPE_CHECKING:`` bodies."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from runtime_imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from runtime_imports(node)


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]
) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        # The package a relative import starts from, then one level up per extra dot.
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join([*base, *([node.module] if node.module else [])])
    else:
        origin = node.module or ""
    for alias in node.names:
        submodule = f"{origin}.{alias.name}"
        yield submodule if submodule in known else origin


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> Graph:
    """Run-time import edges between the modules of ``packages`` (others dropped)."""
    modules = module_names(root, packages)
    known = set(modules)
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in runtime_imports(tree):
            for target in _targets(node, name, is_package, known):
                if target in known and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _describe(graph: Graph, component: list[str]) -> str:
    members = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return "{" + ", ".join(component) + "}: " + "; ".join(edges)


# -- the reader, on packages written for the purpose -----------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_reader_finds_a_cycle_through_a_function_local_import(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from . import b\n",
            "pkg/b.py": "def later():\n    from pkg.a import thing\n    return thing\n",
            "pkg/c.py": "import pkg.a\n",
        },
    )

    graph = import_graph(root, ("pkg",))

    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_the_reader_leaves_out_imports_under_type_checking(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import A\n",
            "pkg/a.py": (
                "import typing\nfrom typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from .b import B\nelse:\n    from .c import C\n"
                "if typing.TYPE_CHECKING:\n    from pkg import b\n"
            ),
            "pkg/b.py": "from .a import A\n",
            "pkg/c.py": "",
            "pkg/sub/__init__.py": "from .. import c\nfrom ..a import A\n",
        },
    )

    graph = import_graph(root, ("pkg",))

    assert graph["pkg"] == {"pkg.a"}
    assert graph["pkg.a"] == {"pkg.c"}
    assert graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.sub"] == {"pkg.c", "pkg.a"}
    assert cycles(graph) == []


def test_the_reader_sees_every_project_module() -> None:
    graph = import_graph(REPO)

    assert {"verifier", "verifier.tokens", "verifier.keys", "deploy.cli"} <= set(graph)
    assert "verifier.keys" in graph["verifier.tokens"]


# -- the floor plan -----------------------------------------------------------------------------


def test_no_project_module_is_over_600_lines() -> None:
    long = {
        name: len(path.read_text("utf-8").splitlines())
        for name, path in module_names(REPO).items()
        if len(path.read_text("utf-8").splitlines()) > MAX_LINES
    }

    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def test_no_import_cycle_between_project_modules_at_run_time() -> None:
    graph = import_graph(REPO)

    found = cycles(graph)

    assert found == [], "import cycles at run time:\n" + "\n".join(
        _describe(graph, component) for component in found
    )


@pytest.mark.parametrize(
    "statement", ["import verifier.tokens", "from verifier import TokenVerifier"]
)
def test_the_verify_path_imports_no_http_client(statement: str) -> None:
    probe = f"import sys\n{statement}\nprint(sorted(m for m in sys.modules if m == 'httpx2'))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"{statement!r} loaded httpx2"
