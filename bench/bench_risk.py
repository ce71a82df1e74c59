"""Speed of the risk model on real prices: the keeper's risk for 100 markets, and the backtest.

``risk_100_markets_seconds``: wall time of the keeper's hourly work for 100 markets of 10,000
hourly bars each: for every market, :func:`offchain.risk.margin_model.proposal_series` (the
shipped model, the backtested code path) on its bars after one more bar has finished, with the
:class:`~offchain.risk.margin_model.SeriesCache` the keeper keeps between hours (the dual-EWMA
volatility over all bars, the day's residual tail and stress rank when an anchor passes, the
APC buffer, the band and the speed limit), then the multiplier in wei. The 100 series are
10,000-hour windows of the Binance BTC, ETH and SOL 2018-2023 files, cycling assets, at offsets
spread over each file (no synthetic data). The first, cold computation of each market (at start
or after a restart: every anchor's tail) is timed separately (``risk_100_markets_cold_seconds``).
Best of ``REPEATS`` (median printed too).

``backtest_hours_per_second``: scored hours of :func:`offchain.risk.backtest.run_backtest` on the
BTC 2018-2023 file (the shipped model, the previous model and the static baselines, each replayed
hour by hour through the registry's rules) divided by its wall time, best of ``BACKTEST_REPEATS``.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import numpy as np

from bench.results import print_table, record
from offchain.risk.backtest import BacktestConfig, run_backtest
from offchain.risk.calibration import multiplier_for_rate
from offchain.risk.margin_model import SeriesCache, proposal_series
from offchain.risk.prices import Candles, load_candles
from offchain.risk.risk_config import MarketRisk, load_risk_config

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILES = (
    "binance_btcusdt_1h_2018_2023.csv",
    "binance_ethusdt_1h_2018_2023.csv",
    "binance_solusdt_1h_2020_2023.csv",
)
MARKETS = 100
HOURS = 10_000
REPEATS = 5
BACKTEST_REPEATS = 2


def market_windows(
    series: list[Candles], markets: int = MARKETS, hours: int = HOURS
) -> list[Candles]:
    """``markets`` windows of ``hours + 1`` bars: market ``i`` is asset ``i % len(series)`` at
    offset number ``i // len(series)``, offsets evenly spread over the file."""
    per_asset = -(-markets // len(series))
    out = []
    for i in range(markets):
        c = series[i % len(series)]
        if len(c) < hours + 1:
            raise ValueError(f"{c.symbol}: {len(c)} bars < {hours + 1}")
        step = (len(c) - hours - 1) // max(per_asset - 1, 1)
        lo = (i // len(series)) * step
        hi = lo + hours + 1
        out.append(
            Candles(
                c.timestamps[lo:hi],
                c.open[lo:hi],
                c.high[lo:hi],
                c.low[lo:hi],
                c.close[lo:hi],
                c.symbol,
                c.has_ohlc,
            )
        )
    return out


def _head(c: Candles, n: int) -> Candles:
    return Candles(
        c.timestamps[:n], c.open[:n], c.high[:n], c.low[:n], c.close[:n], c.symbol, c.has_ohlc
    )


def keeper_hour(
    windows: list[Candles], markets: list[MarketRisk], caches: list[SeriesCache]
) -> list[int]:
    """One keeper hour: every market's proposal on its bars, with its cache; multipliers."""
    out = []
    for c, m, cache in zip(windows, markets, caches, strict=True):
        s = proposal_series(c, m.model, m.floor_rate, m.cap_rate, cache=cache)
        out.append(multiplier_for_rate(float(s.proposal[-1]), m.tiers[0].maintenance_rate))
    return out


def time_risk(
    windows: list[Candles], markets: list[MarketRisk]
) -> tuple[float, list[float], float]:
    """Cold start (every market from scratch), then ``REPEATS`` steady-state hours."""
    caches = [SeriesCache() for _ in windows]
    before = [_head(c, len(c) - 1) for c in windows]
    start = time.perf_counter()
    keeper_hour(before, markets, caches)
    cold = time.perf_counter() - start
    warm = []
    rates: list[int] = []
    for _ in range(REPEATS):
        fresh = [dict_cache(cache) for cache in caches]
        start = time.perf_counter()
        rates = keeper_hour(windows, markets, fresh)
        warm.append(time.perf_counter() - start)
    return cold, warm, float(np.mean(rates)) / 10**18


def dict_cache(cache: SeriesCache) -> SeriesCache:
    """A copy of a cache as the keeper holds it after the previous hour (each repeat starts
    from the same state)."""
    return SeriesCache(
        cache.key, cache.times, cache.close, dict(cache.tails), cache.ranks, cache.budget
    )


def time_backtest(candles: Candles, market: MarketRisk) -> tuple[int, list[float]]:
    times, hours = [], 0
    for _ in range(BACKTEST_REPEATS):
        start = time.perf_counter()
        result = run_backtest(candles, BacktestConfig(market, candidates=False))
        times.append(time.perf_counter() - start)
        hours = result.hours
    return hours, times


def measure() -> dict[str, float]:
    """Load the price files and return the figures (and a few details) keyed by name."""
    logging.getLogger("dmm").setLevel(logging.ERROR)  # the loader's repair report
    config = load_risk_config()
    series = [load_candles(DATA / name)[0] for name in FILES]
    windows = market_windows(series)
    markets = [config.market(c.symbol) for c in windows]
    cold, warm, mean_multiplier = time_risk(windows, markets)
    hours, bt_times = time_backtest(series[0], config.market("BTC"))
    return {
        "risk_100_markets_seconds": min(warm),
        "risk_100_markets_median_seconds": statistics.median(warm),
        "risk_100_markets_cold_seconds": cold,
        "risk_100_markets_mean_multiplier": mean_multiplier,
        "backtest_hours_per_second": hours / min(bt_times),
        "backtest_seconds": min(bt_times),
        "backtest_hours": hours,
    }


def main() -> dict[str, float]:
    """Measure, print the table and merge the figures into ``bench/results.json``."""
    results = measure()
    rows = [
        (
            f"risk_100_markets_seconds ({MARKETS} x {HOURS:,} h, one keeper hour, "
            f"best of {REPEATS})",
            f"{results['risk_100_markets_seconds']:.4f}",
            "<= 0.5 s",
        ),
        ("  median of the same runs", f"{results['risk_100_markets_median_seconds']:.4f}", ""),
        (
            "  cold start (every anchor's tail)",
            f"{results['risk_100_markets_cold_seconds']:.2f}",
            "",
        ),
        (
            "  mean multiplier (sanity check)",
            f"{results['risk_100_markets_mean_multiplier']:.3f}x",
            "",
        ),
        (
            f"backtest_hours_per_second (BTC 2018-2023, {results['backtest_hours']:,} h)",
            f"{results['backtest_hours_per_second']:,.0f}",
            "",
        ),
        ("  backtest wall time, s", f"{results['backtest_seconds']:.2f}", ""),
    ]
    print_table("Risk model speed (real BTC/ETH/SOL prices, this machine)", rows)
    record(
        {
            "risk_100_markets_seconds": round(results["risk_100_markets_seconds"], 6),
            "backtest_hours_per_second": round(results["backtest_hours_per_second"], 1),
        }
    )
    return results


if __name__ == "__main__":
    main()
