"""The registry replayed: hourly proposals through the keeper's push rule and the registry's
guardrails, keeper outages, and the time windows of a backtest.

:func:`replay_guardrails` applies each hour's proposal exactly as the keeper and the contract
would (``margin_math.clamp_multiplier``, :func:`~offchain.risk.calibration.push_decision`,
``margin_math.apply_update``) and reads the maintenance multiplier in force with
``margin_math.multiplier_in_force`` (ramp and stale fallback included). :class:`OutagePlan`
draws seeded keeper outages. :func:`evaluation_window` and :func:`update_times` place a scored
window in a price file; :func:`static_ex_ante` is the static schedule set each month from the
trailing year only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from offchain.protocol.margin_math import (
    Guardrails,
    MarketState,
    Tier,
    apply_update,
    clamp_multiplier,
    is_stale,
    multiplier_in_force,
)
from offchain.protocol.signing import RiskUpdate
from offchain.risk.calibration import multiplier_for_rate, push_decision, rate_of_multiplier
from offchain.risk.prices import HOUR, Candles
from offchain.risk.risk_measures import rolling_tail

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

NO_HASH = b"\x00" * 32
YEAR_H = 8760


@dataclass(frozen=True)
class OutagePlan:
    """Seeded keeper outages: each hour an outage starts with probability ``per_week / 168``
    and lasts a whole number of hours drawn uniformly from ``[min_hours, max_hours]``; no update
    lands while it lasts."""

    seed: int = 7
    per_week: float = 1.0
    min_hours: int = 3
    max_hours: int = 24

    def __post_init__(self) -> None:
        if not 0 < self.per_week <= 168 or not 1 <= self.min_hours <= self.max_hours:
            raise ValueError("outages need 0 < per_week <= 168 and 1 <= min_hours <= max_hours")

    def mask(self, hours: int) -> BoolArray:
        """``True`` for each update slot the keeper misses."""
        rng = np.random.default_rng(self.seed)
        starts = np.flatnonzero(rng.random(hours) < self.per_week / 168)
        lengths = rng.integers(self.min_hours, self.max_hours + 1, size=starts.size)
        out = np.zeros(hours, dtype=bool)
        for s, length in zip(starts, lengths, strict=True):
            out[s : s + length] = True
        return out


# ---------------------------------------------------------------------------------------------
# Guardrail replay


@dataclass(frozen=True)
class Replay:
    """Rates in force per hour after the registry's rules, and what it took.

    ``rate`` is the first tier's rate in force when the hour's loss is realised (``end_times``;
    right after the update without them), ``rate_start`` the lowest in force during the first
    hour (for the intra-hour check), ``stale`` whether the market was stale by then.
    """

    rate: FloatArray
    rate_start: FloatArray
    stale: BoolArray
    pushes: int
    clamped_hours: int


def replay_guardrails(
    rates: FloatArray,
    times: Sequence[int],
    g: Guardrails,
    tiers: Sequence[Tier],
    hysteresis: float = 0.05,
    end_times: Sequence[int] | None = None,
    skip: BoolArray | None = None,
    deadline_seconds: int = 900,
    progress: bool = False,
    desc: str = "replay",
) -> Replay:
    """Replay hourly proposals through the keeper's policy and the registry's rules.

    ``rates[i]`` is proposed at ``times[i]`` (an update stamped and landing then) unless
    ``skip[i]`` (the keeper is down). The result is the first tier's rate under
    :func:`~offchain.protocol.margin_math.multiplier_in_force` at ``end_times[i]`` (default
    ``times[i]``).
    """
    from tqdm import tqdm

    n = len(rates)
    if len(times) != n:
        raise ValueError(f"{n} rates for {len(times)} times")
    ends = times if end_times is None else end_times
    if len(ends) != n:
        raise ValueError(f"{len(ends)} end times for {n} rates")
    tier0 = tiers[0].maintenance_rate
    state = MarketState()
    out = np.empty(n)
    first = np.empty(n)
    stale = np.zeros(n, dtype=bool)
    pushes = clamped_hours = 0
    steps = tqdm(range(n), desc=desc, unit="h", disable=not progress, leave=False, mininterval=0.5)
    for i in steps:
        now = int(times[i])
        if skip is None or not skip[i]:
            rate = float(rates[i])
            if not math.isfinite(rate):
                raise ValueError(f"{desc}: no rate at {now} (warm-up too short for the model)")
            proposed = multiplier_for_rate(rate, tier0)
            clamped = clamp_multiplier(state, g, proposed, now)
            clamped_hours += clamped != proposed
            push, _ = push_decision(state, g, clamped, now, hysteresis)
            if push:
                update = RiskUpdate(0, clamped, 0, now, now + deadline_seconds, NO_HASH)
                state = apply_update(state, g, update, now)
                pushes += 1
        end = int(ends[i])
        at_end = multiplier_in_force(state, g, end)
        out[i] = rate_of_multiplier(at_end, tier0)
        first[i] = rate_of_multiplier(min(multiplier_in_force(state, g, now), at_end), tier0)
        stale[i] = is_stale(state, g, end)
    return Replay(out, first, stale, pushes, clamped_hours)


@dataclass(frozen=True)
class Window:
    """Candle indices: the replay runs over ``[replay_from, stop)``, scoring ``[start, stop)``."""

    replay_from: int
    start: int
    stop: int


def evaluation_window(
    candles: Candles, warmup: int, horizon: int, start: int | None, stop: int | None
) -> Window:
    """The candle indices of the window (see :class:`Window`); ``ValueError`` if too short."""
    n = len(candles)
    t = candles.timestamps
    i0 = warmup if start is None else max(warmup, int(np.searchsorted(t, start, side="left")))
    i1 = (
        n - horizon
        if stop is None
        else min(n - horizon, int(np.searchsorted(t, stop, side="left")))
    )
    if i1 - i0 < 100:
        raise ValueError(
            f"{candles.symbol or 'series'}: {n} candles leave {max(i1 - i0, 0)} hours to score "
            f"after a {warmup}-hour warm-up and the window; need at least 100"
        )
    return Window(warmup, i0, i1)


def update_times(candles: Candles, w: Window, horizon: int) -> tuple[IntArray, IntArray]:
    """When each replayed hour's update lands (its candle's close) and when its loss is
    realised (just before the candle ``horizon`` later closes and the next update lands)."""
    t = candles.timestamps
    lands = t[w.replay_from : w.stop] + HOUR
    ends = t[w.replay_from + horizon : w.stop + horizon] + HOUR - 1
    return lands, np.maximum(ends, lands)


def static_ex_ante(candles: Candles, w: Window, confidence: float, horizon: int) -> FloatArray:
    """The trailing year's historical VaR of ``horizon``-hour losses (both sides pooled), set
    at the first candle of each UTC month from the data before it, for ``[replay_from, stop)``."""
    r = candles.log_returns()
    x = np.convolve(r, np.ones(horizon), mode="valid") if horizon > 1 else r
    months = _month_starts(candles, w)
    tail = rolling_tail(x, months, confidence, YEAR_H, None, min_obs=100)
    values = np.expm1(tail.var)
    return _piecewise(months, values, w)


def _month_starts(candles: Candles, w: Window) -> IntArray:
    t = candles.timestamps[w.replay_from : w.stop]
    month = t.astype("datetime64[s]").astype("datetime64[M]")
    starts = np.flatnonzero(np.concatenate(([True], month[1:] != month[:-1])))
    return (starts + w.replay_from).astype(np.int64)


def _piecewise(anchors: IntArray, values: FloatArray, w: Window) -> FloatArray:
    idx = np.arange(w.replay_from, w.stop)
    which = np.searchsorted(anchors, idx, side="right") - 1
    return values[which]


__all__ = [
    "OutagePlan",
    "Replay",
    "Window",
    "evaluation_window",
    "replay_guardrails",
    "static_ex_ante",
    "update_times",
]
