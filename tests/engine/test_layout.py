"""The engine's front and its three delegatecall parts share one storage layout.

``MarginEngine`` runs ``EngineTrades``, ``EngineLiquidations`` and ``EngineGovernance`` by
delegatecall in its own storage, so every variable must sit in the same slot in all four: one
contract declaring a variable of its own, or initializing the modules in another order, would
make a part write over the engine's books. The layout comes from the compiler itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VYPER = Path(sys.executable).with_name("vyper")
PARTS = ("EngineTrades", "EngineLiquidations", "EngineGovernance")


def _slots(tree: dict, prefix: str = "") -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for name, value in tree.items():
        if isinstance(value, dict) and "slot" in value:
            out[prefix + name] = (value["slot"], value["type"])
        elif isinstance(value, dict):
            out.update(_slots(value, prefix + name + "."))
    return out


def layout(contract: str) -> dict[str, tuple[int, str]]:
    raw = subprocess.run(
        [str(VYPER), "-f", "layout", "-p", "contracts", f"contracts/{contract}.vy"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    doc = json.loads(raw)
    return _slots(doc.get("storage_layout", doc))


@pytest.fixture(scope="module")
def front() -> dict[str, tuple[int, str]]:
    return layout("MarginEngine")


def test_front__books_live_in_engine_state(front):
    assert "engine_state.collateral" in front and "engine_state.positions" in front
    assert all(name.startswith(("engine_state.", "ownable")) for name in front)


@pytest.mark.parametrize("part", PARTS)
def test_part__same_slots_as_the_front(front, part):
    assert layout(part) == front
