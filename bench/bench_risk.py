"""Speed of the risk model on real prices: the keeper's risk for 100 markets, and the backtest.

``risk_100_markets_seconds``: wall time of :func:`offchain.risk.calibration.latest_targets_many` on
a ``(10_000, 100)`` array of hourly closes, i.e. everything the keeper computes per market before it
clamps and signs: the dual-EWMA volatility, the FHS VaR and ES of both sides, the stressed ES floor
over the whole window, the floored rate and the multiplier in wei. The 100 series are 10,000-hour
windows of the Binance BTC/USDT and ETH/USDT files, alternating assets, at 50 offsets spread over
each file (no synthetic data). Loading the files is not timed; the figure is the best of ``REPEATS``
runs after a warm-up run (the median is printed too).

``backtest_hours_per_second``: evaluated hours of :func:`offchain.risk.backtest.run_backtest` on the
BTC file (the recommended model, five candidates including a monthly re-fitted GARCH-t, and
three baselines, each replayed hour by hour through the registry's guardrails) divided by its
wall time, best of ``BACKTEST_REPEATS``.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import numpy as np

from bench.results import print_table, record
from offchain.risk.backtest import run_backtest
from offchain.risk.calibration import latest_targets_many
from offchain.risk.prices import Candles, load_candles

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILES = ("binance_btcusdt_1h.csv", "binance_ethusdt_1h.csv")
MARKETS = 100
HOURS = 10_000
REPEATS = 7
BACKTEST_REPEATS = 2


def market_closes(series: list[Candles], markets: int = MARKETS, hours: int = HOURS) -> np.ndarray:
    """A ``(hours, markets)`` array: column ``i`` is a window of asset ``i % len(series)`` at
    offset number ``i // len(series)``, offsets evenly spread from the start to the end."""
    per_asset = -(-markets // len(series))
    columns = []
    for i in range(markets):
        close = series[i % len(series)].close
        if len(close) < hours:
            raise ValueError(f"{series[i % len(series)].symbol}: {len(close)} prices < {hours}")
        step = (len(close) - hours) // max(per_asset - 1, 1)
        offset = (i // len(series)) * step
        columns.append(close[offset : offset + hours])
    return np.ascontiguousarray(np.column_stack(columns))


def time_risk(closes: np.ndarray, repeats: int = REPEATS) -> list[float]:
    """Wall times of ``latest_targets_many(closes)``, after one untimed warm-up run."""
    latest_targets_many(closes)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        latest_targets_many(closes)
        times.append(time.perf_counter() - start)
    return times


def time_backtest(candles: Candles, repeats: int = BACKTEST_REPEATS) -> tuple[int, list[float]]:
    """Evaluated hours and wall times of ``run_backtest(candles)``."""
    times = []
    hours = 0
    for _ in range(repeats):
        start = time.perf_counter()
        result = run_backtest(candles)
        times.append(time.perf_counter() - start)
        hours = result.hours
    return hours, times


def measure() -> dict[str, float]:
    """Load the price files and return the figures (and a few details) keyed by name."""
    logging.getLogger("dmm").setLevel(logging.ERROR)  # the loader's repair report
    series = [load_candles(DATA / name)[0] for name in FILES]
    closes = market_closes(series)
    risk_times = time_risk(closes)
    target = latest_targets_many(closes)
    hours, bt_times = time_backtest(series[0])
    return {
        "risk_100_markets_seconds": min(risk_times),
        "risk_100_markets_median_seconds": statistics.median(risk_times),
        "risk_100_markets_mean_rate": float(np.mean(target.rate)),
        "backtest_hours_per_second": hours / min(bt_times),
        "backtest_seconds": min(bt_times),
        "backtest_hours": hours,
    }


def main() -> dict[str, float]:
    """Measure, print the table and merge the figures into ``bench/results.json``."""
    results = measure()
    rows = [
        (
            f"risk_100_markets_seconds ({MARKETS} x {HOURS:,} h, best of {REPEATS})",
            f"{results['risk_100_markets_seconds']:.4f}",
            "<= 0.5 s",
        ),
        (
            "  median of the same runs",
            f"{results['risk_100_markets_median_seconds']:.4f}",
            "",
        ),
        (
            "  mean rate to cover (sanity check)",
            f"{100 * results['risk_100_markets_mean_rate']:.3f}%",
            "",
        ),
        (
            f"backtest_hours_per_second (BTC, {results['backtest_hours']:,} h)",
            f"{results['backtest_hours_per_second']:,.0f}",
            "",
        ),
        ("  backtest wall time, s", f"{results['backtest_seconds']:.2f}", ""),
    ]
    print_table("Risk model speed (real BTC/ETH prices, this machine)", rows)
    record(
        {
            "risk_100_markets_seconds": round(results["risk_100_markets_seconds"], 6),
            "backtest_hours_per_second": round(results["backtest_hours_per_second"], 1),
        }
    )
    return results


if __name__ == "__main__":
    main()
