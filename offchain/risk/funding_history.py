"""Settled funding history, the reference mode replayed against it, and the rule for the bound.

**History.** ``binance_*usdt_funding_8h_*.csv`` (``datetime,timestamp,open,high,low,close,
funding_rate``): one row per settlement, ``funding_rate`` the fraction paid by longs at that
settlement. Each settlement covers the time since the previous one (normally 8 hours; 2 or 4
hours on a few stress days); a gap longer than 8 hours is missing data, not a longer interval,
so such a settlement is taken to cover 8 hours. Per second: ``f_k / interval_k``.

**Reference-mode replay** (:func:`replay_reference`). A publisher posts each settlement ``f_k``
at ``T_k`` to the reference feed as its 8-hour equivalent in ``1e-8`` units; the keeper reads
the feed every ``cadence`` seconds (hourly) and signs
:meth:`offchain.risk.funding.ReferenceFundingModel.quote` (staleness decay, the registry's
bound); the update lands at the tick and stays in force until the next one (the heartbeat, two
hours, is never reached). The replay reports what the registry would have carried against what
the venue settled:

* clipping: settlements with ``|f_k| / interval_k`` above the bound, how often and by how much
  (the excess in percent per 8 hours, and the share of all funding cut off);
* staleness: keeper ticks whose reading was older than ``max_age`` (decaying) or dead;
* tracking: per settlement interval, the funding the engine would have charged,
  ``C_k = integral of the signed rate over (T_k - interval_k, T_k]``, against ``f_k``. The feed
  publishes settled rates, so the engine charges ``f_{k-1}`` during interval ``k``: the error is
  the change from one settlement to the next (a publisher of the venue's predicted rate would
  track closer; the history holds settled rates only).

**Bound rule** (:func:`choose_max_funding_rate`, frozen on data up to 2021-12-31): the smallest
multiple of ``1e-8`` per second (``1e10`` WAD, 0.0288% per 8 hours) at or above the 99.9th
percentile of ``|f_k| / interval_k`` over every 2019-2021 settlement of BTC, ETH and SOL pooled,
so that at most 0.1% of the calibration settlements are clipped. A tighter bound limits what a
compromised or faulty keeper can charge (the bound times a day is the most funding one day can
move) and what the funding reserve can demand; a looser one tracks the venue through its cap.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from offchain import WAD
from offchain.risk.funding import (
    HOUR_S,
    INTERVAL_8H_S,
    ReferenceFundingModel,
    ReferenceReading,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MIN_TIMESTAMP = 1_230_768_000  # 2009-01-01
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01
MAX_ABS_SETTLEMENT = 0.1  # a settlement beyond +-10% is a broken row
FEED_DECIMALS = 8
BOUND_GRID_WAD = 10**10  # 1e-8 per second
BOUND_PERCENTILE = 99.9
CALIBRATION_END = 1_640_995_200  # 2022-01-01 00:00 UTC: calibration uses settlements before it


class FundingDataError(ValueError):
    """A funding file that cannot be read as settlements (the message names file and line)."""


@dataclass(frozen=True)
class FundingHistory:
    """Settlements of one perpetual, oldest first.

    ``times`` are settlement times (UTC seconds), ``rates`` the fraction longs paid at each,
    ``intervals`` the seconds each settlement covers.
    """

    symbol: str
    times: IntArray
    rates: FloatArray
    intervals: IntArray

    def __post_init__(self) -> None:
        n = len(self.times)
        if len(self.rates) != n or len(self.intervals) != n:
            raise ValueError("times, rates and intervals must have the same length")
        if n > 1 and not np.all(np.diff(self.times) > 0):
            raise ValueError("settlement times must be strictly increasing")

    def __len__(self) -> int:
        return len(self.times)

    @property
    def rate_per_s(self) -> FloatArray:
        """``f_k / interval_k``."""
        return self.rates / self.intervals

    @property
    def rate_8h(self) -> FloatArray:
        """The 8-hour equivalent of each settlement, ``f_k * 28800 / interval_k``."""
        return self.rates * INTERVAL_8H_S / self.intervals

    def between(self, start: int | None = None, stop: int | None = None) -> FundingHistory:
        """Settlements with ``start <= T_k < stop``."""
        keep = np.ones(len(self), dtype=bool)
        if start is not None:
            keep &= self.times >= start
        if stop is not None:
            keep &= self.times < stop
        return FundingHistory(self.symbol, self.times[keep], self.rates[keep], self.intervals[keep])


# ---------------------------------------------------------------------------------------------
# Reading


def settlement_intervals(times: IntArray) -> IntArray:
    """Seconds each settlement covers: the time since the previous one, 8 hours for the first
    and after a gap longer than 8 hours (missing data)."""
    t = np.asarray(times, dtype=np.int64)
    out = np.full(len(t), INTERVAL_8H_S, dtype=np.int64)
    if len(t) > 1:
        d = np.diff(t)
        out[1:] = np.where(d <= INTERVAL_8H_S, d, INTERVAL_8H_S)
    return out


def _parse_row(cells: list[str], t_col: int, r_col: int, where: str) -> tuple[int, float]:
    try:
        raw_t = float(cells[t_col])
    except ValueError:
        raise FundingDataError(f"{where}: timestamp {cells[t_col]!r} is not a number") from None
    if not math.isfinite(raw_t):
        raise FundingDataError(f"{where}: timestamp {cells[t_col]!r} is not finite")
    t = round(raw_t / 1000) if raw_t > 1e11 else round(raw_t)
    if not MIN_TIMESTAMP <= t <= MAX_TIMESTAMP:
        raise FundingDataError(f"{where}: timestamp {cells[t_col]!r} is not between 2009 and 2100")
    try:
        rate = float(cells[r_col])
    except ValueError:
        raise FundingDataError(f"{where}: funding_rate {cells[r_col]!r} is not a number") from None
    if not math.isfinite(rate):
        raise FundingDataError(f"{where}: funding_rate {cells[r_col]!r} is not finite")
    if abs(rate) > MAX_ABS_SETTLEMENT:
        raise FundingDataError(f"{where}: funding_rate {rate} beyond +-10% per settlement")
    return t, rate


def load_funding_history(path: str | Path, symbol: str | None = None) -> FundingHistory:
    """Read a settlement CSV (a ``timestamp`` in epoch seconds or milliseconds and a
    ``funding_rate`` column; other columns are ignored).

    Rows are sorted by time; a settlement repeated with the same rate is kept once.

    Raises
    ------
    FundingDataError
        One line naming the file, the line and what is wrong: a missing column, a row with too
        few fields, a time or rate that does not parse, is not finite or is implausible, the same
        time with two different rates, or no row at all.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise FundingDataError(f"{path}: cannot read: {exc}") from None
    lines = text.splitlines()
    if not lines:
        raise FundingDataError(f"{path}: empty file")
    header = [c.strip().lower() for c in next(csv.reader([lines[0]]))]
    if "funding_rate" not in header:
        raise FundingDataError(f"{path}: no funding_rate column in the header {lines[0]!r}")
    if "timestamp" not in header:
        raise FundingDataError(f"{path}: no timestamp column in the header {lines[0]!r}")
    t_col, r_col = header.index("timestamp"), header.index("funding_rate")
    seen: dict[int, float] = {}
    for lineno, cells in enumerate(csv.reader(lines[1:]), start=2):
        if not cells or all(not c.strip() for c in cells):
            continue
        where = f"{path}:{lineno}"
        if len(cells) != len(header):
            raise FundingDataError(f"{where}: {len(cells)} fields, the header has {len(header)}")
        t, rate = _parse_row(cells, t_col, r_col, where)
        if t in seen and seen[t] != rate:
            raise FundingDataError(f"{where}: settlement at {t} repeated with another rate")
        seen[t] = rate
    if not seen:
        raise FundingDataError(f"{path}: no settlement rows")
    times = np.array(sorted(seen), dtype=np.int64)
    rates = np.array([seen[int(t)] for t in times], dtype=np.float64)
    return FundingHistory(symbol or _symbol(path), times, rates, settlement_intervals(times))


def _symbol(path: Path) -> str:
    """``BTCUSDT`` from ``binance_btcusdt_funding_8h_2019_2023.csv``; else the file's stem."""
    parts = path.stem.split("_")
    return parts[1].upper() if len(parts) > 2 and parts[2] == "funding" else path.stem


# ---------------------------------------------------------------------------------------------
# The bound


@dataclass(frozen=True)
class ClipStats:
    """How the bound cuts a set of settlements."""

    settlements: int
    clipped: int
    max_excess_8h: float  # largest |rate| - bound, in fraction per 8 hours
    mean_excess_8h: float  # average over clipped settlements
    share_cut: float  # funding cut off / all funding paid (absolute values)

    @property
    def clipped_fraction(self) -> float:
        return self.clipped / self.settlements if self.settlements else 0.0


def clip_stats(history: FundingHistory, bound_per_s: float) -> ClipStats:
    """Settlements above ``bound_per_s`` and by how much (module docstring)."""
    per_s = np.abs(history.rate_per_s)
    excess = np.clip(per_s - bound_per_s, 0.0, None)
    hit = excess > 0
    total = float(np.sum(np.abs(history.rates)))
    cut = float(np.sum(excess * history.intervals))
    return ClipStats(
        settlements=len(history),
        clipped=int(hit.sum()),
        max_excess_8h=float(excess.max() * INTERVAL_8H_S) if len(history) else 0.0,
        mean_excess_8h=float(excess[hit].mean() * INTERVAL_8H_S) if hit.any() else 0.0,
        share_cut=cut / total if total else 0.0,
    )


def choose_max_funding_rate(
    histories: Sequence[FundingHistory],
    until: int = CALIBRATION_END,
    percentile: float = BOUND_PERCENTILE,
    grid_wad: int = BOUND_GRID_WAD,
) -> int:
    """The bound rule (module docstring): ``ceil(q / grid) * grid`` with ``q`` the
    ``percentile`` of the pooled ``|f_k| / interval_k`` of settlements before ``until`` (WAD).
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile}")
    pooled = np.concatenate([np.abs(h.between(stop=until).rate_per_s) for h in histories])
    if pooled.size == 0:
        raise ValueError("no settlement before the calibration end")
    q = float(np.percentile(pooled, percentile, method="inverted_cdf"))
    return math.ceil(q * WAD / grid_wad) * grid_wad


# ---------------------------------------------------------------------------------------------
# Reference-mode replay


@dataclass(frozen=True)
class ReferenceReplay:
    """The rate the registry carries at each keeper tick, and the comparison with the venue."""

    symbol: str
    bound: int  # WAD per second
    ticks: IntArray  # tick times; the rate signed at ticks[j] is in force until ticks[j + 1]
    rate: FloatArray  # per second (the signed WAD rate / 1e18)
    clipped: npt.NDArray[np.bool_]
    stale: npt.NDArray[np.bool_]  # the reading was older than max_age (decaying or dead)
    history: FundingHistory
    charged: FloatArray  # per settlement, funding charged over its interval (fraction)

    def rate_at(self, times: IntArray) -> FloatArray:
        """The rate in force at each of ``times`` (0 before the first tick)."""
        j = np.searchsorted(self.ticks, np.asarray(times, dtype=np.int64), side="right") - 1
        return np.where(j >= 0, self.rate[np.clip(j, 0, None)], 0.0)

    def funding_between(self, start: IntArray, stop: IntArray) -> FloatArray:
        """The funding a long pays from ``start`` to ``stop`` (fraction of notional)."""
        cum = np.concatenate(([0.0], np.cumsum(self.rate[:-1] * np.diff(self.ticks))))

        def integral(t: IntArray) -> FloatArray:
            t = np.asarray(t, dtype=np.int64)
            j = np.searchsorted(self.ticks, t, side="right") - 1
            jc = np.clip(j, 0, None)
            inside = cum[jc] + self.rate[jc] * (t - self.ticks[jc])
            return np.where(j >= 0, inside, 0.0)

        return integral(stop) - integral(start)


def replay_reference(
    history: FundingHistory,
    bound: int,
    model: ReferenceFundingModel | None = None,
    cadence_s: int = HOUR_S,
) -> ReferenceReplay:
    """Replay the reference mode over ``history`` (module docstring)."""
    if len(history) == 0:
        raise ValueError(f"{history.symbol}: no settlements to replay")
    if cadence_s < 1:
        raise ValueError(f"cadence_s must be positive, got {cadence_s}")
    model = model or ReferenceFundingModel()
    first = -(-int(history.times[0]) // cadence_s) * cadence_s
    ticks = np.arange(first, int(history.times[-1]) + cadence_s, cadence_s, dtype=np.int64)
    k = np.searchsorted(history.times, ticks, side="right") - 1
    answers = np.rint(history.rate_8h * 10**FEED_DECIMALS).astype(np.int64)
    rate = np.empty(len(ticks))
    clipped = np.zeros(len(ticks), dtype=bool)
    stale = np.zeros(len(ticks), dtype=bool)
    for j, (tick, kk) in enumerate(zip(ticks.tolist(), k.tolist(), strict=True)):
        reading = ReferenceReading(int(answers[kk]), int(history.times[kk]), FEED_DECIMALS)
        q = model.quote(reading, tick, bound)
        rate[j] = q.rate / WAD
        clipped[j] = q.clipped
        stale[j] = q.source == "reference_stale"
    replay = ReferenceReplay(
        history.symbol, bound, ticks, rate, clipped, stale, history, np.zeros(len(history))
    )
    starts = history.times - history.intervals
    charged = replay.funding_between(starts, history.times)
    return ReferenceReplay(history.symbol, bound, ticks, rate, clipped, stale, history, charged)


@dataclass(frozen=True)
class TrackingStats:
    """The engine's charged funding per settlement interval against the venue's."""

    intervals: int
    mean_abs_error_8h: float
    rms_error_8h: float
    correlation: float
    charged_total: float  # sum of C_k (fraction of notional)
    settled_total: float  # sum of f_k
    stale_ticks: int
    ticks: int
    clipped_ticks: int


def tracking_stats(replay: ReferenceReplay, start: int | None, stop: int | None) -> TrackingStats:
    """:class:`TrackingStats` over settlements with ``start <= T_k < stop`` (the first
    settlement of the replay is left out: nothing was published before it)."""
    h = replay.history
    keep = np.ones(len(h), dtype=bool)
    keep[0] = False
    if start is not None:
        keep &= h.times >= start
    if stop is not None:
        keep &= h.times < stop
    c, f, n = replay.charged[keep], h.rates[keep], h.intervals[keep]
    err_8h = (c - f) * INTERVAL_8H_S / n
    tick_keep = np.ones(len(replay.ticks), dtype=bool)
    if start is not None:
        tick_keep &= replay.ticks >= start
    if stop is not None:
        tick_keep &= replay.ticks < stop
    corr = float(np.corrcoef(c, f)[0, 1]) if c.size > 2 and np.std(c) > 0 and np.std(f) > 0 else 0.0
    return TrackingStats(
        intervals=int(keep.sum()),
        mean_abs_error_8h=float(np.mean(np.abs(err_8h))) if c.size else 0.0,
        rms_error_8h=float(np.sqrt(np.mean(err_8h**2))) if c.size else 0.0,
        correlation=corr,
        charged_total=float(c.sum()),
        settled_total=float(f.sum()),
        stale_ticks=int(replay.stale[tick_keep].sum()),
        ticks=int(tick_keep.sum()),
        clipped_ticks=int(replay.clipped[tick_keep].sum()),
    )


__all__ = [
    "BOUND_GRID_WAD",
    "BOUND_PERCENTILE",
    "CALIBRATION_END",
    "ClipStats",
    "FundingDataError",
    "FundingHistory",
    "ReferenceReplay",
    "TrackingStats",
    "choose_max_funding_rate",
    "clip_stats",
    "load_funding_history",
    "replay_reference",
    "settlement_intervals",
    "tracking_stats",
]
