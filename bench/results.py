"""Shared writer for ``bench/results.json``: each benchmark merges its own keys in."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"


def record(values: dict[str, float | int]) -> dict[str, float | int]:
    """Merge ``values`` into ``bench/results.json`` and return the whole object."""
    current: dict[str, float | int] = {}
    if RESULTS.exists():
        current = json.loads(RESULTS.read_text())
    current.update(values)
    RESULTS.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    return current


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """Print ``(what, measured, goal)`` rows as a fixed-width table."""
    width = max(len(r[0]) for r in rows)
    print(f"\n{title}")
    print(f"{'what':<{width}}  {'measured':>14}  goal")
    for what, measured, goal in rows:
        print(f"{what:<{width}}  {measured:>14}  {goal}")
