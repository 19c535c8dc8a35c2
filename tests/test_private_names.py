"""No module of the project uses a private name (``_x``) of the standard library or a dependency.

Private names change or vanish without notice in a new Python or a new
release, silently. Three ways to reach one are refused:

* importing it: ``import a._b``, ``from a._b import c``, ``from a import _c``;
* an attribute of an imported module: ``mod._c``;
* an attribute ``x._c`` that the project itself never defines (as a function,
  class, module or class-level name, parameter, or ``self._c``/``cls._c``):
  so it can only belong to someone else's object (``future._asyncio_...``).

The project's own private names are free to use across its modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("onionmail", "gateway", "tui", "threat_model", "tests", "bench")


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def ours(module: str) -> bool:
    return module.split(".")[0] in PROJECT


def project_trees() -> dict[Path, ast.Module]:
    files = sorted(path for package in PROJECT for path in (ROOT / package).rglob("*.py"))
    return {path: ast.parse(path.read_text(), filename=str(path)) for path in files}


def defined_names(trees: dict[Path, ast.Module]) -> set[str]:
    """Every name the project defines itself, wherever it does."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                names.add(node.attr)
    return names


def foreign_modules(tree: ast.Module) -> set[str]:
    """Local names bound to modules that are not the project's."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not ours(alias.name):
                    names.add(alias.asname or alias.name.split(".")[0])
    return names


def private_uses(tree: ast.Module, defined: set[str]) -> Iterator[tuple[int, str]]:
    modules = foreign_modules(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not ours(alias.name) and any(map(private, alias.name.split("."))):
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if ours(node.module) or node.module == "__future__":
                continue
            names = [node.module, *(alias.name for alias in node.names)]
            if any(private(part) for name in names for part in name.split(".")):
                imported = ", ".join(alias.name for alias in node.names)
                yield node.lineno, f"from {node.module} import {imported}"
        elif isinstance(node, ast.Attribute) and private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in modules:
                yield node.lineno, f"{node.value.id}.{node.attr}"
            elif node.attr not in defined:
                yield node.lineno, f".{node.attr} (defined nowhere in the project)"


def test_no_private_names_of_other_code() -> None:
    trees = project_trees()
    assert len(trees) > 100, "the scan found too few modules"
    defined = defined_names(trees)
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path, tree in trees.items()
        for line, what in private_uses(tree, defined)
    ]
    assert found == [], "private names of other code:\n" + "\n".join(found)


def test_the_scan_finds_each_kind_of_private_use() -> None:
    source = """
import asyncio
import email._header_value_parser
from email._policybase import Policy
from argparse import _SubParsersAction
future._asyncio_future_blocking = False
asyncio._get_running_loop()
class Mine:
    def __init__(self):
        self._own = 1
    def _helper(self):
        return other._own, other._helper
"""
    tree = ast.parse(source)
    found = [what for _, what in private_uses(tree, defined_names({Path("x.py"): tree}))]
    assert found == [
        "import email._header_value_parser",
        "from email._policybase import Policy",
        "from argparse import _SubParsersAction",
        "._asyncio_future_blocking (defined nowhere in the project)",
        "asyncio._get_running_loop",
    ]
