"""Layering is a test: what each package may import (docs/design.md, "The parts").

Top-level packages first, then the packages inside ``onionmail``: each may
import only those listed for it, so the shape in the design document is the
shape of the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "onionmail": {"textual", "tui", "gateway", "dns"},
    "threat_model": {"onionmail", "gateway", "tui", "textual", "dns"},
    "gateway": {"tui", "textual"},
    "tui": {"gateway"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_layers(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    if package in ("onionmail", "threat_model"):
        assert files, f"{package}/ has no Python files"
    for path in files:
        bad = imported_modules(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


ONIONMAIL_LAYERS: dict[str, set[str]] = {
    "core": set(),
    "config": {"core"},
    "seal": {"core"},
    "tor.testnet": {"core"},
    "store": {"core", "seal"},
    "smtp": {"core", "seal"},
    "message": {"core", "config", "seal"},
    "openpgp": {"core", "config", "seal", "message"},
    "tor": {"core", "config", "seal"},
    "gateway_link": {"core", "config", "seal", "message", "store", "tor"},
    "devices": {"core", "config", "seal", "store", "tor"},
    "admission": {"core", "config", "seal", "store"},
    "box": {
        "core",
        "config",
        "seal",
        "message",
        "openpgp",
        "store",
        "tor",
        "smtp",
        "gateway_link",
        "devices",
        "admission",
    },
    "cli": {
        "core",
        "config",
        "seal",
        "message",
        "openpgp",
        "store",
        "tor",
        "tor.testnet",
        "smtp",
        "gateway_link",
        "devices",
        "admission",
        "box",
    },
}
"""What each package inside ``onionmail`` may import from the others (itself always)."""


def onionmail_package(dotted: str) -> str | None:
    parts = dotted.split(".")
    if parts[0] != "onionmail" or len(parts) < 2:
        return None
    if parts[1] == "tor" and len(parts) > 2 and parts[2] == "testnet":
        return "tor.testnet"
    return parts[1]


def onionmail_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {pkg for name in found if (pkg := onionmail_package(name)) is not None}


def test_every_onionmail_module_is_in_a_layered_package() -> None:
    for path in sorted((ROOT / "onionmail").rglob("*.py")):
        dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if dotted == "onionmail.__init__":
            continue
        assert onionmail_package(dotted) in ONIONMAIL_LAYERS, f"{dotted}: in no package"


@pytest.mark.parametrize("package", sorted(ONIONMAIL_LAYERS))
def test_onionmail_packages_import_only_their_layers(package: str) -> None:
    files = [
        path
        for path in sorted((ROOT / "onionmail").rglob("*.py"))
        if onionmail_package(".".join(path.relative_to(ROOT).with_suffix("").parts)) == package
    ]
    assert files, f"onionmail.{package} has no modules"
    for path in files:
        bad = onionmail_imports(path) - ONIONMAIL_LAYERS[package] - {package}
        assert not bad, f"{path.relative_to(ROOT)} imports onionmail.{sorted(bad)}"


MAX_MODULES = 12
MAX_LINES = 600
"""About 500 lines is the aim; a module past this many must be split."""


def test_no_package_or_module_is_too_big_to_see() -> None:
    for package in (ROOT / "onionmail").iterdir():
        if package.is_dir() and (package / "__init__.py").exists():
            modules = [p for p in package.glob("*.py") if p.name != "__init__.py"]
            assert len(modules) <= MAX_MODULES, f"{package.name}: {len(modules)} modules"
    for top in ("onionmail", "gateway", "tui", "threat_model"):
        for path in (ROOT / top).rglob("*.py"):
            lines = len(path.read_text().splitlines())
            assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines"


GATEWAY_LAYERS: dict[str, set[str]] = {
    "inbound": {"config", "counters", "dns", "errors", "registry", "storage"},
    "outbound": {"config", "counters", "dns", "errors", "registry", "storage"},
    "config": {"errors"},
    "counters": set(),
    "dns": {"errors"},
    "dns_records": {"config", "dns", "errors", "inbound", "outbound"},
    "acme": {"config", "errors"},
    "balance": {"errors"},
    "metrics": {"config", "daemon"},
    "errors": set(),
    "registry": {"storage"},
    "storage": {"errors"},
}
"""What each part of ``gateway`` may import from the others (``daemon`` and ``cli`` wire
them all together); the two directions of mail never import each other."""


@pytest.mark.parametrize("part", sorted(GATEWAY_LAYERS))
def test_gateway_parts_import_only_their_layers(part: str) -> None:
    base = ROOT / "gateway"
    files = sorted((base / part).rglob("*.py")) if (base / part).is_dir() else [base / f"{part}.py"]
    assert files and all(path.exists() for path in files), part
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        found = {
            node.module.split(".")[1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("gateway.")
            and node.level == 0
        }
        bad = found - GATEWAY_LAYERS[part] - {part}
        assert not bad, f"{path.relative_to(ROOT)} imports gateway.{sorted(bad)}"
