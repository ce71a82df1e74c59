"""The risk models the keeper runs live: a price history in, a proposed multiplier out.

Two models share one interface (:class:`LiveRiskModel`):

- :class:`CalibratedRiskModel`, the default: the shipped margin model of ``deploy/risk.yaml``
  (:func:`offchain.risk.margin_model.proposal_series`, the very function ``dmm backtest``
  scores) run on **finished** bars of the keeper's accepted feed readings, kept in a
  :class:`~offchain.bots.bar_store.BarStore` across restarts. The bar still forming is never used;
  the update is stamped with the close of the last finished bar. What the keeper signs is what
  the backtest judged, hour by hour;
- :class:`EwmaRiskModel`, a transparent fallback: EWMA volatility over a reference volatility.

Both return a :class:`Proposal` *before* clamping; the keeper clamps it to the on-chain guardrails
and applies hysteresis (:func:`offchain.bots.keeper.decide`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
from eth_utils import keccak

from offchain import WAD
from offchain.bots.bar_store import BarStore
from offchain.protocol.margin_math import MarketState
from offchain.risk.calibration import multiplier_for_rate
from offchain.risk.margin_model import SeriesCache, model_hash, proposal_series
from offchain.risk.prices import Candles
from offchain.risk.risk_config import MarketRisk, RiskConfig, load_risk_config

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

log = logging.getLogger("dmm.keeper")

HOURS_PER_YEAR = 8760


@dataclass(frozen=True)
class Proposal:
    """What the risk model asks for, before clamping.

    ``observed_at``: the close of the last bar behind it (``None``: the keeper uses the time of
    its last feed round).
    """

    multiplier: int
    funding_rate: int
    model_hash: bytes
    detail: str = ""
    observed_at: int | None = None


class LiveRiskModel(Protocol):
    """Turns a market's price history into a proposed multiplier and funding rate."""

    def propose(
        self, market_id: int, times: IntArray, prices: FloatArray, state: MarketState, now: int
    ) -> Proposal: ...


def to_bars(times: IntArray, prices: FloatArray, bar_seconds: int) -> tuple[IntArray, FloatArray]:
    """The last price of each ``bar_seconds`` bucket, oldest first (empty buckets are skipped).

    A gap therefore counts as one bar: its whole move is one bar's return, never spread thin.

    >>> to_bars(np.array([0, 10, 3600, 7300]), np.array([1.0, 2.0, 3.0, 4.0]), 3600)
    (array([   0, 3600, 7200]), array([2., 3., 4.]))
    """
    if bar_seconds < 1:
        raise ValueError(f"bar_seconds must be at least 1, got {bar_seconds}")
    t = np.asarray(times, dtype=np.int64)
    p = np.asarray(prices, dtype=np.float64)
    if len(t) != len(p):
        raise ValueError(f"{len(t)} times but {len(p)} prices")
    if len(t) == 0:
        return t, p
    buckets = t // bar_seconds
    last = np.flatnonzero(np.append(np.diff(buckets) != 0, True))
    return buckets[last] * bar_seconds, p[last]


def implied_hourly(vol_index: FloatArray, bar_seconds: int = 3600) -> FloatArray:
    """An annualised volatility index in percent (DVOL) as a volatility per bar (log units).

    >>> round(float(implied_hourly(np.array([87.6]))[0]), 6)  # 87.6% a year
    0.009359
    """
    per_year = HOURS_PER_YEAR * 3600 / bar_seconds
    return np.asarray(vol_index, dtype=np.float64) / 100 / math.sqrt(per_year)


@dataclass
class _Latest:
    """The last computed proposal of a market, valid until a new bar finishes."""

    n_bars: int
    last_bar: int
    proposal: Proposal


@dataclass
class CalibratedRiskModel:
    """The shipped margin model, live (see the module docstring).

    Parameters
    ----------
    tier0_rates
        First-tier maintenance rate (wei) of each market, read from the registry: the multiplier
        is ``ceil(rate * WAD**2 / tier0)``.
    config
        The shipped risk configuration (default ``deploy/risk.yaml``); market ids select the
        entry, whose model and ``[min, max]`` band the keeper runs.
    store
        Finished bars, persisted (default: in memory only).
    bar_seconds
        3,600 on a real network (the model is hourly); a devnet replaying one price per block
        uses its block time.
    vol_index
        Per market, a callable of the block time returning the current volatility-index
        reading (annualised, in percent; ``None`` when unavailable or stale), recorded with
        each finished bar and blended when the market's model has ``vol_index_weight > 0``.
    """

    tier0_rates: Mapping[int, int]
    config: RiskConfig | None = None
    store: BarStore | None = None
    bar_seconds: int = 3600
    vol_index: Mapping[int, Callable[[int], float | None]] = field(default_factory=dict)
    _caches: dict[int, SeriesCache] = field(default_factory=dict, init=False, repr=False)
    _latest: dict[int, _Latest] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.tier0_rates) == 0:
            raise ValueError("tier0_rates needs the first-tier rate of every market")
        if self.bar_seconds < 1:
            raise ValueError(f"bar_seconds must be at least 1, got {self.bar_seconds}")
        if self.config is None:
            self.config = load_risk_config()
        if self.store is None:
            self.store = BarStore(":memory:")

    def market(self, market_id: int) -> MarketRisk:
        """The configuration the model runs for ``market_id``."""
        assert self.config is not None
        try:
            return self.config.by_id(market_id)
        except ValueError as exc:
            raise ValueError(f"market {market_id}: {exc}") from exc

    def seed(self, market_id: int, candles: Candles) -> int:
        """Fill the store with history (a price file read by the backtest's loader)."""
        assert self.store is not None
        added = self.store.seed(market_id, candles.timestamps, candles.close)
        log.info(
            "market %d: %d bars of history stored (%d in all)",
            market_id,
            added,
            self.store.count(market_id),
        )
        return added

    def record(self, market_id: int, times: IntArray, prices: FloatArray, now: int) -> int:
        """Store the bars of ``times``/``prices`` that are finished at ``now``; returns how many
        were new. The bar still forming (``start + bar_seconds > now``) is left out."""
        assert self.store is not None
        bar_t, bar_p = to_bars(times, prices, self.bar_seconds)
        done = bar_t + self.bar_seconds <= now
        added = self.store.append(market_id, bar_t[done], bar_p[done])
        reader = self.vol_index.get(market_id)
        if added and reader is not None:
            value = reader(now)
            if value is not None and math.isfinite(value) and value > 0:
                self.store.set_vol_index(market_id, int(bar_t[done][-1]), value)
        return added

    def candles(self, market_id: int) -> tuple[Candles, FloatArray]:
        """The stored bars as candles (closes only) and the volatility index per bar."""
        assert self.store is not None
        t, c, v = self.store.bars(market_id)
        return Candles(t, c, c, c, c, f"market {market_id}", has_ohlc=False), v

    def propose(
        self, market_id: int, times: IntArray, prices: FloatArray, state: MarketState, now: int
    ) -> Proposal:
        """Record the finished bars, then the model's rate -> multiplier; raises ``ValueError``
        while the history is shorter than the model's warm-up."""
        if market_id not in self.tier0_rates:
            raise ValueError(f"market {market_id}: no tier-0 rate configured for the model")
        market = self.market(market_id)
        self.record(market_id, times, prices, now)
        assert self.store is not None
        n = self.store.count(market_id)
        last = self.store.last_open_time(market_id)
        cached = self._latest.get(market_id)
        if cached is not None and (cached.n_bars, cached.last_bar) == (n, last):
            return cached.proposal
        tier0 = self.tier0_rates[market_id]  # may be read from the registry on first use
        if not 0 < tier0 <= WAD:
            raise ValueError(f"market {market_id}: tier-0 rate {tier0} not in (0, WAD]")
        model = market.model
        if n < max(3, model.warmup + 1):
            raise ValueError(f"market {market_id}: warming up: {n} of {model.warmup + 1} bars")
        candles, index = self.candles(market_id)
        implied = implied_hourly(index, self.bar_seconds) if model.vol_index_weight > 0 else None
        cache = self._caches.setdefault(market_id, SeriesCache())
        series = proposal_series(
            candles, model, market.floor_rate, market.cap_rate, implied, cache, self.bar_seconds
        )
        rate = float(series.proposal[-1])
        if not math.isfinite(rate):
            raise ValueError(f"market {market_id}: warming up: {n} bars give no rate yet")
        first, last_t = int(candles.timestamps[0]), int(candles.timestamps[-1])
        digest = model_hash(model, market.floor_rate, market.cap_rate, first, last_t, n)
        detail = (
            f"{model.name}: vol {float(series.sigma[-1]):.3%}/bar, VaR {float(series.var[-1]):.3%}"
            f", rank {float(series.rank[-1]):.2f} -> rate {float(series.rate[-1]):.3%}"
            f", proposed {rate:.3%} (band {market.floor_rate:.2%}-{market.cap_rate:.2%})"
        )
        proposal = Proposal(
            multiplier_for_rate(rate, tier0),
            0,
            digest,
            detail,
            observed_at=last_t + self.bar_seconds,
        )
        self._latest[market_id] = _Latest(n, last_t, proposal)
        return proposal


@dataclass(frozen=True)
class EwmaRiskModel:
    """Multiplier = EWMA volatility / reference volatility, floored at 1.

    ``sigma_t^2 = lam * sigma_{t-1}^2 + (1 - lam) * r_t^2`` with ``r_t`` the log return scaled to
    one hour (``r / sqrt(max(dt, 1 h) / 1 h)``: a jump between two quick readings counts as a
    full hour's move, never less). The multiplier answers within one reading of a shock; the
    registry's step limits and the keeper's clamp bound how fast it moves.
    """

    lam: float = 0.94
    reference_hourly_vol: float = 0.01
    version: str = "ewma-v1"

    def __post_init__(self) -> None:
        if not 0 < self.lam < 1:
            raise ValueError("lam must lie in (0, 1)")
        if self.reference_hourly_vol <= 0:
            raise ValueError("reference_hourly_vol must be positive")

    def volatility(self, times: IntArray, prices: FloatArray) -> float:
        """Hourly EWMA volatility of the log returns."""
        returns = np.diff(np.log(prices))
        dt = np.maximum(np.diff(times).astype(np.float64), 3600.0) / 3600.0
        scaled = returns / np.sqrt(dt)
        var = float(scaled[0] ** 2) if len(scaled) else 0.0
        for r in scaled[1:]:
            var = self.lam * var + (1 - self.lam) * float(r) ** 2
        return math.sqrt(var)

    def propose(
        self, market_id: int, times: IntArray, prices: FloatArray, state: MarketState, now: int
    ) -> Proposal:
        sigma = self.volatility(times, prices)
        ratio = max(1.0, sigma / self.reference_hourly_vol)
        multiplier = int(ratio * WAD)
        digest = keccak(
            text=f"{self.version}|lam={self.lam}|ref={self.reference_hourly_vol}"
            f"|n={len(prices)}|from={int(times[0])}|to={int(times[-1])}"
        )
        return Proposal(multiplier, 0, digest, f"ewma vol {sigma:.4%}/h")


__all__ = [
    "CalibratedRiskModel",
    "EwmaRiskModel",
    "LiveRiskModel",
    "Proposal",
    "implied_hourly",
    "to_bars",
]
