"""``make bench``: run every benchmark, print a table each and the SPEC figures against goals.

Gas is measured on ape's local network (py-evm), times on this machine. Each benchmark merges
its figures into ``bench/results.json``.
"""

from __future__ import annotations

import importlib
import logging

from bench.results import RESULTS, print_table, record

# Module, in the order the data flows: risk model, registry, engine, keeper and bots.
BENCHMARKS = [
    "bench.bench_risk",
    "bench.bench_registry_gas",
    "bench.bench_engine_gas",
    "bench.bench_keeper",
]
GOALS = {
    "gas_update_1_market": ("<=", 45_000),
    "gas_update_per_market_20": ("<=", 12_000),
    "gas_is_liquidatable_4_positions": ("<=", 142_895),
    "gas_is_liquidatable_4_positions_portfolio": ("<=", 142_895),
    "gas_liquidate_1_position": ("<=", 150_000),
    "risk_100_markets_seconds": ("<=", 0.5),
    "scan_10k_seconds": ("<=", 2.0),
    "shock_to_update_blocks": ("<=", 2),
}


def main() -> None:
    """Run each benchmark module's ``main()``; a missing module is reported, not fatal."""
    logging.basicConfig(level=logging.WARNING)
    from ape.logging import logger

    logger.set_level("WARNING")  # no per-transaction lines in the tables
    if RESULTS.exists():
        RESULTS.unlink()
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            print(f"\n{name}: not run ({exc})")
            continue
        module.main()
    results = record({})
    rows = []
    for key, (op, goal) in GOALS.items():
        if key not in results:
            rows.append((key, "not measured", f"{op} {goal:,}"))
            continue
        value = results[key]
        met = value <= goal
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
        rows.append((key, shown, f"{op} {goal:,} ({'met' if met else 'NOT met'})"))
    print_table("SPEC figures (bench/results.json)", rows)


if __name__ == "__main__":
    main()
