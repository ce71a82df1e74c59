"""The risk models the keeper runs live: a price history in, a proposed multiplier out.

Two models share one interface (:class:`LiveRiskModel`):

- :class:`CalibratedRiskModel`, the default: the backtested model of
  :mod:`offchain.risk.calibration` (filtered historical simulation on a dual EWMA filter, covering
  the 99% one-hour VaR, floored at a fraction of the stressed ES) run on bars of the keeper's
  accepted feed readings. What the keeper signs is what ``dmm backtest`` validated on real data;
- :class:`EwmaRiskModel`, a transparent fallback: EWMA volatility over a reference volatility.

Both return a :class:`Proposal` *before* clamping; the keeper clamps it to the on-chain guardrails
and applies hysteresis (:func:`offchain.bots.keeper.decide`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from eth_utils import keccak

from offchain import WAD
from offchain.protocol.margin_math import MarketState, Tier
from offchain.risk.calibration import (
    DEFAULT_POLICY,
    RECOMMENDED_MODEL,
    Policy,
    latest_targets_many,
    model_hash,
)
from offchain.risk.risk_measures import RiskModel

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Proposal:
    """What the risk model asks for, before clamping."""

    multiplier: int
    funding_rate: int
    model_hash: bytes
    detail: str = ""


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


@dataclass(frozen=True)
class CalibratedRiskModel:
    """The backtested calibration, live: the latest value of the walk-forward pipeline, with its
    empirical tails and stressed floor refreshed at every call
    (:func:`offchain.risk.calibration.latest_targets_many`).

    Accepted readings are grouped into bars of ``bar_seconds`` (3,600 on a real network, where
    the model's hourly parameters apply; a devnet replaying one hourly price per block uses its
    block time), the rate to cover is the model's VaR floored at ``policy.floor_fraction`` of the
    stressed ES, and the multiplier is the smallest that makes the market's first-tier
    maintenance rate ``tier0_rates[market_id]`` cover it:
    ``m = ceil(rate * WAD**2 / r0)``.
    """

    tier0_rates: Mapping[int, int]
    model: RiskModel = RECOMMENDED_MODEL
    policy: Policy = DEFAULT_POLICY
    horizon: int = 1
    bar_seconds: int = 3600

    def __post_init__(self) -> None:
        if len(self.tier0_rates) == 0:
            raise ValueError("tier0_rates needs the first-tier rate of every market")
        if self.horizon < 1:
            raise ValueError(f"horizon must be at least 1 bar, got {self.horizon}")
        if self.bar_seconds < 1:
            raise ValueError(f"bar_seconds must be at least 1, got {self.bar_seconds}")

    def propose(
        self, market_id: int, times: IntArray, prices: FloatArray, state: MarketState, now: int
    ) -> Proposal:
        """Risk of the bars so far -> multiplier; raises ``ValueError`` if history is too short."""
        if market_id not in self.tier0_rates:
            raise ValueError(f"market {market_id}: no tier-0 rate configured for the model")
        tier0 = self.tier0_rates[market_id]  # may be read from the registry on first use
        if not 0 < tier0 <= WAD:
            raise ValueError(f"market {market_id}: tier-0 rate {tier0} not in (0, WAD]")
        bar_t, bar_p = to_bars(times, prices, self.bar_seconds)
        try:
            latest = latest_targets_many(
                bar_p[:, None], self.model, self.policy, self.horizon, (Tier(0, tier0),)
            )
        except ValueError as exc:
            raise ValueError(
                f"market {market_id}: {len(bar_p)} bars are not enough for {self.model.name}"
            ) from exc
        rate, floor = float(latest.rate[0]), float(latest.floor[0])
        if not math.isfinite(rate):
            raise ValueError(
                f"market {market_id}: {len(bar_p)} bars are not enough for {self.model.name}"
            )
        digest = model_hash(
            self.model, self.policy, self.horizon, int(bar_t[0]), int(bar_t[-1]), len(bar_p)
        )
        risk = latest.risk
        detail = (
            f"{self.model.name}: vol {float(risk.sigma[0]):.3%}/bar, VaR L/S "
            f"{float(risk.var_long[0]):.3%}/{float(risk.var_short[0]):.3%}, floor {floor:.3%}"
            f" -> rate {rate:.3%}"
        )
        return Proposal(latest.multipliers[0], 0, digest, detail)


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
    "to_bars",
]
