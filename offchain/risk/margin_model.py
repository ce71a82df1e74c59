"""The shipped margin model: hourly candles in, the rate the keeper proposes out, hour by hour.

One function, :func:`proposal_series`, computes the model for every candle of a series from the
data up to that candle only; the backtest runs it over a price file, the keeper over its stored
bars (with a :class:`SeriesCache` so that each new hour costs milliseconds). Both therefore sign
and score exactly the same numbers.

Pipeline for the candle ``t`` (index ``t`` uses closes up to candle ``t``):

1. **Volatility**: the larger of a slow and a fast EWMA of squared hourly log returns (or one
   EWMA), ``sigma_t`` the forecast for the next hour. With a volatility index (Deribit DVOL,
   converted to an hourly volatility ``iv_t``) the variance is blended,
   ``sigma_t^2 = (1 - w) sigma_hist^2 + w iv_t^2`` (historical alone where no index is known).
2. **Tail** (filtered historical simulation): residuals ``z_s = r_s / sigma_s`` of every past
   hour (or the last ``tail_window``), both signs pooled; at each **daily anchor** (the candle
   closing at 00:00 UTC) their empirical quantile ``q_z`` at ``quantile`` (VaR) or mean beyond
   it (ES). Anchors are fixed in UTC, so a keeper whose history starts elsewhere refreshes at
   the same hours as the backtest. ``VaR_t = 1 - exp(-q_z sigma_t sqrt(h))`` (the short side's
   ``exp(.) - 1`` is used, the larger).
3. **Anti-procyclicality** (:mod:`offchain.risk.procyclicality`), one of EMIR's tools:
   ``buffer`` (released with the stress rank of ``sigma_t`` in the trailing year),
   ``stressed_weight`` (weight on the rate at the most volatile month of the look-back) or
   ``lookback_floor`` (unfiltered VaR of up to ten years), or ``none``.
4. **Band**: clipped to ``[floor, cap]``, the registry's ``[min, max]`` multiplier times the
   first tier's rate (so the proposal lies where the registry will accept it).
5. **Speed limit**: :func:`~offchain.risk.procyclicality.rise_budget` of ``rise_budget`` points
   per ``rise_window`` hours (none when ``None``).

The keeper then turns the proposal into a multiplier, clamps it to the step limits and applies
hysteresis (:mod:`offchain.risk.calibration`). NaN until the model is warmed up (the first
anchor with ``tail_min_obs`` residuals); flat candles (a zero variance) are safe: their
residuals are left out and the rate falls to the floor.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from eth_utils import keccak

from offchain.risk.prices import HOUR, Candles
from offchain.risk.procyclicality import (
    EMIR_MIN_STRENGTH,
    buffer_release,
    lookback_floor,
    rise_budget,
    stress_rank,
    stressed_weight,
)
from offchain.risk.risk_measures import MeasureName, check_confidence, rolling_tail
from offchain.risk.volatility import ewma_recursion, seed_variance

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ApcName = Literal["none", "buffer", "stressed_weight", "lookback_floor"]
APC_TOOLS: tuple[ApcName, ...] = ("none", "buffer", "stressed_weight", "lookback_floor")

MODEL_VERSION = "dmm-margin/2"
DAY_S = 86_400
YEAR_H = 8_760
MAX_LOOKBACK_H = 10 * YEAR_H


@dataclass(frozen=True)
class MarginModel:
    """Parameters of the margin model (see the module docstring for the pipeline).

    Parameters
    ----------
    slow, fast
        EWMA decays, ``0 < fast < slow < 1``; ``fast=None`` for a single EWMA.
    quantile, measure
        Level of the residual tail and whether the margin covers its VaR or its ES.
    tail_window
        Hours of residuals in the tail (``None``: every hour since the data start).
    apc, apc_strength
        The anti-procyclicality tool and its strength (buffer fraction or stressed weight;
        EMIR asks for at least 0.25; ignored by ``lookback_floor`` and ``none``).
    release_window
        Hours of volatility the stress rank is taken over (the buffer's reference).
    stress_window
        Hours in the stressed period (``stressed_weight``): the most volatile such window.
    lookback
        Hours of look-back for ``stressed_weight`` and ``lookback_floor`` (at most ten years).
    vol_index_weight
        Weight ``w`` of the implied volatility in the variance (0: historical only).
    rise_budget, rise_window
        Largest rise of the proposal (points of notional, as a fraction) within
        ``rise_window`` hours; ``None`` for no speed limit.
    horizon
        Liquidation horizon in hours (square-root-of-time from the one-hour tail).
    warmup
        Hours of data before the first proposal (the backtest's warm-up and the keeper's).
    """

    name: str = "fhs_apc"
    slow: float = 0.97
    fast: float | None = 0.7
    quantile: float = 0.985
    measure: MeasureName = "var"
    tail_window: int | None = None
    tail_min_obs: int = 250
    apc: ApcName = "buffer"
    apc_strength: float = 0.5
    release_window: int = YEAR_H
    stress_window: int = 720
    lookback: int = MAX_LOOKBACK_H
    vol_index_weight: float = 0.0
    rise_budget: float | None = 0.03
    rise_window: int = 24
    horizon: int = 1
    warmup: int = 720

    def __post_init__(self) -> None:
        if self.fast is None:
            if not 0 < self.slow < 1:
                raise ValueError(f"slow must lie in (0, 1), got {self.slow}")
        elif not 0 < self.fast < self.slow < 1:
            raise ValueError(f"need 0 < fast < slow < 1, got fast={self.fast}, slow={self.slow}")
        check_confidence(self.quantile)
        if self.measure not in ("var", "es"):
            raise ValueError(f"measure must be 'var' or 'es', got {self.measure!r}")
        if self.tail_window is not None and self.tail_window < self.tail_min_obs:
            raise ValueError(f"tail_window {self.tail_window} is below tail_min_obs")
        if self.tail_min_obs < 10:
            raise ValueError(f"tail_min_obs must be at least 10, got {self.tail_min_obs}")
        if self.apc not in APC_TOOLS:
            raise ValueError(f"apc must be one of {APC_TOOLS}, got {self.apc!r}")
        if self.apc in ("buffer", "stressed_weight") and not (
            EMIR_MIN_STRENGTH <= self.apc_strength <= 1
        ):
            raise ValueError(
                f"apc_strength of {self.apc} must lie in [{EMIR_MIN_STRENGTH}, 1] "
                f"(EMIR art. 28), got {self.apc_strength}"
            )
        if self.release_window < 24 or self.stress_window < 24:
            raise ValueError("release_window and stress_window must be at least 24 hours")
        if not self.stress_window <= self.lookback <= MAX_LOOKBACK_H:
            raise ValueError(f"lookback must lie in [stress_window, {MAX_LOOKBACK_H}] hours")
        if not 0 <= self.vol_index_weight <= 1:
            raise ValueError(f"vol_index_weight must lie in [0, 1], got {self.vol_index_weight}")
        if self.rise_budget is not None and not self.rise_budget > 0:
            raise ValueError(f"rise_budget must be positive or None, got {self.rise_budget}")
        if self.rise_window < 1:
            raise ValueError(f"rise_window must be at least 1 hour, got {self.rise_window}")
        if not 1 <= self.horizon <= 168:
            raise ValueError(f"horizon must be 1 to 168 hours, got {self.horizon}")
        if self.warmup < 300:
            raise ValueError(f"warmup must be at least 300 hours, got {self.warmup}")

    def params(self) -> dict[str, object]:
        """Every parameter, as plain values (for the model hash and reports)."""
        return asdict(self)


@dataclass
class SeriesCache:
    """What :func:`proposal_series` can reuse when the same candles come back with more
    appended (the keeper, once an hour): the tail at each anchor it has computed, keyed by the
    anchor's open time, and the rise budget's output up to ``budget_until``.

    Valid only for one market, one model and one band: :func:`proposal_series` checks the key
    and the prefix of the candles and starts afresh when they differ.
    """

    key: tuple[object, ...] = ()
    times: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    close: FloatArray = field(default_factory=lambda: np.zeros(0))
    tails: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    ranks: FloatArray = field(default_factory=lambda: np.zeros(0))
    budget: FloatArray = field(default_factory=lambda: np.zeros(0))

    def usable_prefix(self, candles: Candles, key: tuple[object, ...]) -> int:
        """How many leading candles match the cached ones (0 after a change of key)."""
        k = self.times.size
        if key != self.key or k == 0 or len(candles) < k:
            return 0
        same = np.array_equal(candles.timestamps[:k], self.times) and np.array_equal(
            candles.close[:k], self.close
        )
        return k if same else 0


@dataclass(frozen=True)
class ProposalSeries:
    """The model at every candle (NaN while warming up); rates are fractions of notional."""

    sigma: FloatArray
    var: FloatArray
    es: FloatArray
    rank: FloatArray
    rate: FloatArray
    proposal: FloatArray
    anchors: IntArray

    def __len__(self) -> int:
        return int(self.proposal.size)


def daily_anchors(timestamps: IntArray, bar_seconds: int = HOUR) -> IntArray:
    """Indices of the bars that close at a multiple of 24 bars since the epoch: with hourly
    bars, those that close at 00:00 UTC (open at 23:00).

    >>> daily_anchors(np.array([82_800, 86_400, 169_200]))
    array([0, 2])
    """
    t = np.asarray(timestamps, dtype=np.int64)
    return np.flatnonzero((t // bar_seconds + 1) % 24 == 0).astype(np.int64)


def model_variance(
    returns: FloatArray, model: MarginModel, implied: FloatArray | None = None
) -> FloatArray:
    """One-step-ahead variance of each hour (``len(returns) + 1`` values), blended with the
    squared implied hourly volatility ``implied`` (one per candle, NaN where unknown)."""
    r2 = np.square(np.asarray(returns, dtype=np.float64))
    s = seed_variance(r2)
    v = ewma_recursion(r2, model.slow, s)
    if model.fast is not None:
        v = np.maximum(v, ewma_recursion(r2, model.fast, s))
    if implied is not None and model.vol_index_weight > 0:
        iv = np.asarray(implied, dtype=np.float64)
        if iv.size != v.size:
            raise ValueError(f"{iv.size} implied volatilities for {v.size} candles")
        known = np.isfinite(iv) & (iv > 0)
        w = model.vol_index_weight
        v = np.where(known, (1 - w) * v + w * np.square(np.where(known, iv, 0.0)), v)
    return v


def residuals(returns: FloatArray, sigma: FloatArray) -> FloatArray:
    """``r_s / sigma_s``; NaN where the forecast volatility is zero (flat candles)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = returns / sigma[:-1]
    z[~np.isfinite(z)] = np.nan
    return z


def _rolling_stress_sigma(returns: FloatArray, window: int) -> FloatArray:
    """Root mean square of the last ``window`` returns at each candle (NaN before)."""
    r2 = np.concatenate(([0.0], np.cumsum(np.square(returns))))
    out = np.full(returns.size + 1, np.nan)
    if returns.size >= window:
        out[window:] = np.sqrt((r2[window:] - r2[:-window]) / window)
    return out


def _anchor_tails(
    z: FloatArray,
    returns: FloatArray,
    times: IntArray,
    anchors: IntArray,
    model: MarginModel,
    cache: SeriesCache | None,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per anchor: residual tail ``(q, es)`` in sigma units, the stressed-period volatility and
    the look-back floor (log units), each from the data up to the anchor only."""
    q = np.full(anchors.size, np.nan)
    es = np.full(anchors.size, np.nan)
    stress = np.full(anchors.size, np.nan)
    floor = np.full(anchors.size, np.nan)
    todo = []
    for j, e in enumerate(anchors):
        hit = cache.tails.get(int(times[e])) if cache is not None else None
        if hit is None:
            todo.append(j)
        else:
            q[j], es[j], stress[j], floor[j] = hit
    if todo:
        ends = anchors[todo]
        tail = rolling_tail(z, ends, model.quantile, model.tail_window, None, model.tail_min_obs)
        q[todo], es[todo] = tail.var, tail.es
        if model.apc == "lookback_floor":
            hist = rolling_tail(returns, ends, model.quantile, model.lookback, None, 720)
            floor[todo] = hist.es if model.measure == "es" else hist.var
        if model.apc == "stressed_weight":
            monthly = _rolling_stress_sigma(returns, model.stress_window)
            for j, e in zip(todo, ends, strict=True):
                past = monthly[max(0, int(e) - model.lookback + 1) : int(e) + 1]
                past = past[np.isfinite(past)]
                stress[j] = past.max() if past.size else np.nan
        if cache is not None:
            for j in todo:
                if np.isfinite(q[j]):
                    cache.tails[int(times[anchors[j]])] = (q[j], es[j], stress[j], floor[j])
    return q, es, stress, floor


def proposal_series(
    candles: Candles,
    model: MarginModel,
    floor_rate: float,
    cap_rate: float,
    implied: FloatArray | None = None,
    cache: SeriesCache | None = None,
    bar_seconds: int = HOUR,
) -> ProposalSeries:
    """The model at every candle of ``candles`` (see the module docstring).

    Parameters
    ----------
    candles
        Hourly candles, oldest first.
    model
        The model's parameters.
    floor_rate, cap_rate
        The band ``[floor, cap]`` of the proposal: the registry's ``min_multiplier`` and
        ``max_multiplier`` times the market's first-tier rate.
    implied
        Hourly implied volatility (log units, per hour) known at each candle's close, NaN
        where unknown; used when ``model.vol_index_weight > 0``.
    cache
        Reused and updated when the same candles come back with more appended.
    bar_seconds
        Length of a bar (3,600; a devnet replaying one price per block uses its block time):
        the tail and the stress reference refresh every 24 bars.
    """
    if not 0 < floor_rate <= cap_rate < 1:
        raise ValueError(f"need 0 < floor <= cap < 1, got [{floor_rate}, {cap_rate}]")
    n = len(candles)
    if n < 3:
        raise ValueError(f"{candles.symbol or 'series'}: need at least 3 candles, got {n}")
    key = (model, floor_rate, cap_rate, implied is not None, bar_seconds)
    prefix = cache.usable_prefix(candles, key) if cache is not None else 0
    if cache is not None and prefix == 0:
        cache.key, cache.tails = key, {}
        cache.ranks, cache.budget = np.zeros(0), np.zeros(0)
    r = candles.log_returns()
    sigma = np.sqrt(model_variance(r, model, implied))
    z = residuals(r, sigma)
    anchors = daily_anchors(candles.timestamps, bar_seconds)
    q, es, stress, floor = _anchor_tails(z, r, candles.timestamps, anchors, model, cache)
    # Per candle: the values of the last anchor at or before it (NaN before the first).
    which = np.searchsorted(anchors, np.arange(n), side="right") - 1
    have = which >= 0
    pick = np.where(have, which, 0)

    def per_hour(values: FloatArray) -> FloatArray:
        return np.where(have, values[pick] if values.size else np.nan, np.nan)

    scale = math.sqrt(model.horizon)
    unit = per_hour(es if model.measure == "es" else q)
    var = np.expm1(per_hour(q) * sigma * scale)
    es_rate = np.expm1(per_hour(es) * sigma * scale)
    rate = np.expm1(unit * sigma * scale)
    rank = _ranks(sigma, anchors, model, cache, prefix)
    if model.apc == "buffer":
        rate = buffer_release(rate, rank, model.apc_strength)
    elif model.apc == "stressed_weight":
        stressed = np.expm1(unit * per_hour(stress) * scale)
        rate = stressed_weight(
            rate, np.where(np.isfinite(stressed), stressed, rate), model.apc_strength
        )
    elif model.apc == "lookback_floor":
        rate = lookback_floor(rate, np.expm1(per_hour(floor) * scale))
    rate[: model.warmup] = np.nan
    rate[np.isnan(unit)] = np.nan
    banded = np.where(np.isnan(rate), np.nan, np.clip(rate, floor_rate, cap_rate))
    proposal = _budgeted(banded, model, cache, prefix)
    if cache is not None:
        cache.times, cache.close = candles.timestamps.copy(), candles.close.copy()
        cache.ranks, cache.budget = rank, proposal
    return ProposalSeries(sigma, var, es_rate, rank, rate, proposal, anchors)


def _ranks(
    sigma: FloatArray, anchors: IntArray, model: MarginModel, cache: SeriesCache | None, prefix: int
) -> FloatArray:
    """Stress ranks, reusing the cached ones of the first ``prefix`` candles."""
    if model.apc != "buffer":
        return np.full(sigma.size, np.nan)
    if cache is None or prefix == 0:
        return stress_rank(sigma, anchors, model.release_window)
    # Recompute from the last anchor at or before the cached prefix: its segment may have grown.
    last = anchors[anchors < prefix]
    start = int(last[-1]) if last.size else 0
    fresh = stress_rank(sigma, anchors[anchors >= start], model.release_window)
    out = np.concatenate((cache.ranks[:start], fresh[start:]))
    return out


def _budgeted(
    banded: FloatArray, model: MarginModel, cache: SeriesCache | None, prefix: int
) -> FloatArray:
    """The rise budget over ``banded``, continuing the cached output of the first ``prefix``."""
    if model.rise_budget is None:
        return banded
    if cache is None or prefix == 0:
        return rise_budget(banded, model.rise_budget, model.rise_window)
    keep = max(0, prefix - model.rise_window)
    # Recompute a window's worth of the cached tail so the recursion sees the same history.
    tail = rise_budget(
        np.concatenate((cache.budget[keep:prefix], banded[prefix:])),
        model.rise_budget,
        model.rise_window,
    )
    head = cache.budget[:prefix]
    return np.concatenate((head, tail[prefix - keep :]))


def canonical_json(
    model: MarginModel,
    floor_rate: float,
    cap_rate: float,
    first_timestamp: int,
    last_timestamp: int,
    n_bars: int,
) -> str:
    """The canonical JSON (sorted keys, no whitespace) behind a ``model_hash``: the model
    version, every parameter, the band and the data window."""
    payload = {
        "version": MODEL_VERSION,
        "model": model.params(),
        "band": [floor_rate, cap_rate],
        "data": {"first": int(first_timestamp), "last": int(last_timestamp), "n": int(n_bars)},
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)


def model_hash(
    model: MarginModel,
    floor_rate: float,
    cap_rate: float,
    first_timestamp: int,
    last_timestamp: int,
    n_bars: int,
) -> bytes:
    """keccak-256 of :func:`canonical_json`: the provenance a keeper signs with each update."""
    return keccak(
        text=canonical_json(model, floor_rate, cap_rate, first_timestamp, last_timestamp, n_bars)
    )


__all__ = [
    "APC_TOOLS",
    "MODEL_VERSION",
    "MarginModel",
    "ProposalSeries",
    "SeriesCache",
    "canonical_json",
    "daily_anchors",
    "model_hash",
    "model_variance",
    "proposal_series",
    "residuals",
]
