"""The layout of ``offchain/``: four packages that follow the data one way, no module too long.

``risk``      may import ``protocol`` (the registry maths it replays), nothing else of ours
``protocol``  imports none of the other three
``bots``      may import ``risk`` and ``protocol``, never ``devnet``
``devnet``    may import the three others
``cli``, ``cli_ops`` and ``cli_risk`` sit on top: no package imports them.

Every import counts, including those inside functions (the command line imports lazily).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "offchain"
PACKAGES = ("risk", "protocol", "bots", "devnet")
TOP = ("cli", "cli_ops", "cli_risk")
ALLOWED: dict[str, set[str]] = {
    "risk": {"protocol"},
    "protocol": set(),
    "bots": {"risk", "protocol"},
    "devnet": {"risk", "protocol", "bots"},
}
MAX_LINES = 700


def imported_modules(source: str) -> list[str]:
    """Every ``offchain...`` module named by an import anywhere in ``source``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "offchain"]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == "offchain"
        ):
            found.append(node.module)
            # ``from offchain import risk`` names a package too.
            if node.module == "offchain":
                found += [f"offchain.{a.name}" for a in node.names]
    return found


def part_of(module: str) -> str | None:
    """The package (or top-level command module) an ``offchain`` module belongs to; ``None``
    for the root package itself (``offchain.WAD``)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return parts[1] if parts[1] in PACKAGES + TOP else None


def violations(package: str, source: str) -> list[str]:
    """Imports of ``source`` (a module of ``package``) that run against the flow."""
    bad = []
    for module in imported_modules(source):
        target = part_of(module)
        if target is None or target == package:
            continue
        if target in TOP or target not in ALLOWED[package]:
            bad.append(module)
    return bad


def package_modules() -> list[tuple[str, Path]]:
    return [(p, f) for p in PACKAGES for f in sorted((ROOT / p).rglob("*.py"))]


@pytest.mark.parametrize(
    ("package", "path"),
    package_modules(),
    ids=[str(f.relative_to(ROOT)) for _, f in package_modules()],
)
def test_imports__follow_the_flow(package: str, path: Path) -> None:
    assert violations(package, path.read_text()) == []


@pytest.mark.parametrize(
    ("package", "source", "expected"),
    [
        ("protocol", "from offchain.risk.prices import HOUR", ["offchain.risk.prices"]),
        ("risk", "import offchain.bots.keeper", ["offchain.bots.keeper"]),
        ("risk", "def f():\n    from offchain.devnet import demo\n", ["offchain.devnet"]),
        ("bots", "from offchain import devnet", ["offchain.devnet"]),
        ("bots", "from offchain.cli_ops import ops", ["offchain.cli_ops"]),
        ("devnet", "from offchain.cli import main", ["offchain.cli"]),
        ("risk", "from offchain import WAD\nfrom offchain.protocol.margin_math import Tier", []),
        ("bots", "from offchain.risk.calibration import calibrate", []),
    ],
)
def test_violations__finds_an_import_against_the_flow(package, source, expected) -> None:
    assert violations(package, source) == expected


def test_modules__none_over_700_lines() -> None:
    long = {
        str(f.relative_to(ROOT)): n
        for f in ROOT.rglob("*.py")
        if (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_packages__no_module_left_at_the_top_but_the_command_line() -> None:
    top = {f.stem for f in ROOT.glob("*.py")} - {"__init__"}
    assert top == set(TOP)
