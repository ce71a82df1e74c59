"""From risk measures to the registry's parameters: multiplier, push rule, clamp, hash; and the
**previous** model, kept as the backtest's ``previous`` reference.

Shared by the shipped model (:mod:`offchain.risk.margin_model`) and the keeper:

* :func:`multiplier_for_rate`: ``m = ceil(rate * WAD**2 / tier0_rate)`` in wei, so that the
  first tier's maintenance rate ``tier0_rate * m / WAD`` covers the rate; and its inverse
  :func:`rate_of_multiplier`;
* :func:`push_decision`: the keeper's push rule (first update, stale market, refresh once
  ``refresh_fraction`` of the heartbeat has passed, or a change of at least ``hysteresis``),
  which the backtest replays; the clamp itself is
  :func:`offchain.protocol.margin_math.clamp_multiplier` (nothing is clamped on-chain).

The previous model (``RECOMMENDED_MODEL`` with ``DEFAULT_POLICY``, replayed under
``PREVIOUS_GUARDRAILS`` and ``PREVIOUS_TIERS``), as this project shipped it before the written
selection rule (:mod:`offchain.risk.selection`): filtered historical simulation on a 0.97/0.7
dual EWMA covering the 99% one-hour VaR, floored at 12.5% of the five-year stressed ES
(:func:`stressed_es_series`, :func:`target_series`), guardrails 1x-18x of a 0.5% tier,
+200% / -10% per update, one decrease an hour, heartbeat 2 hours, stale 4x, no ramp. Its
parameters were picked by looking at the same 2017-2021 results they were reported on; the
backtest keeps it only as the reference its successor must not leave more shortfall than.
:func:`calibrate` and :func:`latest_targets_many` are its one-market and many-market forms.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from eth_utils import keccak

from offchain import WAD
from offchain.protocol.margin_math import (
    Guardrails,
    MarketState,
    Tier,
    UpdateRejected,
    apply_update,
    clamp_multiplier,
    is_stale,
    validate_guardrails,
    validate_tiers,
    with_funding_bound,
)
from offchain.protocol.signing import RiskUpdate
from offchain.risk.prices import HOUR, Candles
from offchain.risk.risk_measures import (
    MarketsRisk,
    RiskModel,
    RiskSeries,
    check_confidence,
    empirical_var_es,
    latest_risk_many,
    pooled,
    risk_series,
    rolling_tail,
    to_notional_loss,
)
from offchain.risk.volatility import ANNUALISATION, HOURS_PER_YEAR

FloatArray = npt.NDArray[np.float64]

log = logging.getLogger("dmm.calibration")

MODEL_VERSION = "dmm-risk/1"

DEFAULT_TIERS: tuple[Tier, ...] = (Tier(notional_floor=0, maintenance_rate=5 * 10**15),)
DEFAULT_GUARDRAILS = Guardrails(
    min_multiplier=WAD,
    max_multiplier=18 * WAD,
    max_increase=2 * WAD,
    max_decrease=WAD // 10,
    min_decrease_interval=3600,
    heartbeat=7200,
    stale_multiplier=4 * WAD,
    increase_ramp=0,
    max_funding_rate=10**12,
)

# The configuration this project shipped before the current margin model (``deploy/risk.yaml``):
# kept as the ``previous`` reference of the backtest.
PREVIOUS_GUARDRAILS = DEFAULT_GUARDRAILS
PREVIOUS_TIERS = DEFAULT_TIERS

RECOMMENDED_MODEL = RiskModel(
    name="fhs_dual_ewma",
    volatility="dual_ewma",
    tail="fhs",
    measure="var",
    confidence=0.99,
    slow=0.97,
    fast=0.7,
    symmetric=True,
)
"""Filtered historical simulation on a fast/slow EWMA filter (0.97 / 0.7), both sides pooled,
covering the 99% VaR over one hour (the backtest's target; see the module docstring of
:mod:`offchain.risk.backtest` for why VaR and not ES at the same confidence)."""


@dataclass(frozen=True)
class Policy:
    """How a risk rate becomes a pushed multiplier.

    Parameters
    ----------
    floor_fraction
        Fraction of the stressed ES below which the rate never falls (0 disables the floor).
    floor_window
        Hours of history for the stressed ES (``None``: all available).
    floor_refresh
        Hours between two evaluations of the stressed ES (it moves slowly).
    hysteresis
        Relative change of the multiplier below which nothing is pushed.
    step_seconds
        The keeper's cadence; an update is forced when the next run would find the market stale.
    deadline_seconds
        Validity of a signed update.
    """

    floor_fraction: float = 0.125
    floor_window: int | None = 5 * HOURS_PER_YEAR
    floor_refresh: int = 24
    hysteresis: float = 0.05
    step_seconds: int = HOUR
    deadline_seconds: int = 900

    def __post_init__(self) -> None:
        if not 0 <= self.floor_fraction <= 1:
            raise ValueError(f"floor_fraction must lie in [0, 1], got {self.floor_fraction}")
        if self.floor_window is not None and self.floor_window < 24:
            raise ValueError(f"floor_window must be at least 24 hours, got {self.floor_window}")
        if self.floor_refresh < 1:
            raise ValueError(f"floor_refresh must be at least 1 hour, got {self.floor_refresh}")
        if not 0 <= self.hysteresis < 1:
            raise ValueError(f"hysteresis must lie in [0, 1), got {self.hysteresis}")
        if self.step_seconds < 1 or self.deadline_seconds < 1:
            raise ValueError("step_seconds and deadline_seconds must be positive")

    def params(self) -> dict[str, object]:
        """The policy as plain values (for the model hash)."""
        return {
            "floor_fraction": self.floor_fraction,
            "floor_window": self.floor_window,
            "floor_refresh": self.floor_refresh,
            "hysteresis": self.hysteresis,
        }


DEFAULT_POLICY = Policy()


# ---------------------------------------------------------------------------------------------
# Pure conversions and decisions


def multiplier_for_rate(rate: float, tier0_rate: int) -> int:
    """The smallest multiplier (wei) whose first-tier maintenance rate covers ``rate``.

    .. math:: m = \\left\\lceil \\frac{\\mathrm{rate} \\cdot \\mathrm{WAD}^2}{r_0} \\right\\rceil

    so that ``r_0 * m / WAD >= rate * WAD``. Exact: the float is the fraction ``num / den``
    (``float.as_integer_ratio``) and the ceiling is taken in integers.
    """
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"rate must be finite and non-negative, got {rate}")
    if tier0_rate <= 0:
        raise ValueError(f"tier0_rate must be positive, got {tier0_rate}")
    num, den = float(rate).as_integer_ratio()
    return -(-num * WAD * WAD // (den * tier0_rate))


def rate_of_multiplier(multiplier: int, tier0_rate: int) -> float:
    """The first tier's maintenance rate (fraction of notional) under ``multiplier``."""
    return tier0_rate * multiplier / WAD / WAD


def floored_rate(rate: FloatArray, stressed_es: FloatArray, fraction: float) -> FloatArray:
    """``max(rate, fraction * stressed_es)`` (NaN floors are ignored)."""
    return np.fmax(np.asarray(rate, dtype=np.float64), fraction * np.asarray(stressed_es))


REFRESH_FRACTION = 0.5
"""The keeper re-pushes once this fraction of the heartbeat has passed (``refresh_fraction``)."""


def push_decision(
    state: MarketState,
    g: Guardrails,
    clamped: int,
    now: int,
    hysteresis: float,
    refresh_fraction: float = REFRESH_FRACTION,
) -> tuple[bool, str]:
    """Whether to push ``clamped`` now, and why: the keeper's rule
    (:func:`offchain.bots.keeper.decide`), which the backtest replays.

    Pushed when the market has no update yet, is stale, the last update is at least
    ``refresh_fraction`` of the heartbeat old, or the multiplier moves by at least
    ``hysteresis`` of the current target. With hourly bars and a two-hour heartbeat every bar
    is pushed (the refresh comes due each hour); the band matters for faster bars.
    """
    if state.updated_at == 0:
        return True, "first update"
    if is_stale(state, g, now):
        return True, "market is stale"
    age = now - state.updated_at
    if age >= g.heartbeat * refresh_fraction:
        return True, f"refresh: last update {age} s ago"
    change = abs(clamped - state.target)
    if change == 0:
        return False, "unchanged"
    if change >= hysteresis * state.target:
        return True, f"change of {change / state.target:.1%}"
    return False, f"change of {change / state.target:.2%} inside the {hysteresis:.0%} band"


def canonical_model_json(
    model: RiskModel,
    policy: Policy,
    horizon: int,
    first_timestamp: int,
    last_timestamp: int,
    n_prices: int,
) -> str:
    """The canonical JSON (sorted keys, no whitespace) behind a ``model_hash``."""
    payload = {
        "version": MODEL_VERSION,
        "model": model.params(),
        "policy": policy.params(),
        "horizon_hours": horizon,
        "data": {"first": int(first_timestamp), "last": int(last_timestamp), "n": int(n_prices)},
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)


def model_hash(
    model: RiskModel,
    policy: Policy,
    horizon: int,
    first_timestamp: int,
    last_timestamp: int,
    n_prices: int,
) -> bytes:
    """keccak-256 of :func:`canonical_model_json`."""
    text = canonical_model_json(model, policy, horizon, first_timestamp, last_timestamp, n_prices)
    return keccak(text=text)


# ---------------------------------------------------------------------------------------------
# Series (walk-forward, shared with the backtest)


def stressed_es_series(
    candles: Candles,
    confidence: float,
    horizon: int = 1,
    window: int | None = DEFAULT_POLICY.floor_window,
    refresh: int = DEFAULT_POLICY.floor_refresh,
) -> FloatArray:
    """Historical ES of ``horizon``-hour log returns over the last ``window`` hours, both sides
    pooled, as a fraction of notional (short side, the larger), one value per candle.

    Index ``t`` uses the returns up to candle ``t`` only; refreshed every ``refresh`` hours.
    """
    check_confidence(confidence)
    r = candles.log_returns()
    summed = np.convolve(r, np.ones(horizon), mode="valid") if horizon > 1 else r
    x = np.concatenate((np.full(horizon - 1, np.nan), summed))
    n1 = len(candles)
    ends = np.arange(0, n1, refresh, dtype=np.int64)
    reps = np.diff(np.append(ends, n1))
    tail = rolling_tail(x, ends, confidence, window, side=None, min_obs=100)
    return to_notional_loss(np.repeat(tail.es, reps), "short")


@dataclass(frozen=True)
class TargetSeries:
    """Walk-forward risk, stressed floor and the rate to cover, one value per candle."""

    risk: RiskSeries
    stressed_es: FloatArray
    floor: FloatArray
    rate: FloatArray


def target_series(
    candles: Candles,
    model: RiskModel = RECOMMENDED_MODEL,
    policy: Policy = DEFAULT_POLICY,
    horizon: int = 1,
    progress: bool = False,
    stressed: FloatArray | None = None,
) -> TargetSeries:
    """The rate each hour's update must cover: the model's rate, floored (steps 1 and 2).

    ``stressed`` is :func:`stressed_es_series` of these candles at the model's confidence and
    the policy's window, when the caller already has it (the backtest shares it across models).
    """
    risk = risk_series(candles, model, horizon, progress=progress)
    if policy.floor_fraction <= 0:
        stressed = np.full(len(candles), np.nan)
    elif stressed is None:
        stressed = stressed_es_series(
            candles, model.confidence, horizon, policy.floor_window, policy.floor_refresh
        )
    elif len(stressed) != len(candles):
        raise ValueError(f"{len(stressed)} stressed ES values for {len(candles)} candles")
    floor = policy.floor_fraction * stressed
    return TargetSeries(
        risk, stressed, floor, floored_rate(risk.rate, stressed, policy.floor_fraction)
    )


@dataclass(frozen=True)
class MarketsTarget:
    """The latest rate and multiplier of ``M`` markets (arrays of shape ``(M,)``).

    ``multipliers`` are the proposals (wei) before the registry's guardrails are applied.
    """

    risk: MarketsRisk
    stressed_es: FloatArray
    floor: FloatArray
    rate: FloatArray
    multipliers: tuple[int, ...]


def latest_targets_many(
    closes: FloatArray,
    model: RiskModel = RECOMMENDED_MODEL,
    policy: Policy = DEFAULT_POLICY,
    horizon: int = 1,
    tiers: Sequence[Tier] = DEFAULT_TIERS,
) -> MarketsTarget:
    """Steps 1 to 3 for many markets at once from a ``(T, M)`` array of hourly closes.

    The vectorised counterpart of the last value of :func:`target_series` (equal to it when
    ``T - 1`` is a multiple of ``fhs_refresh`` and ``floor_refresh``, the hours at which the
    walk-forward series refresh their empirical tails): :func:`latest_risk_many` for the model's
    VaR and ES, the stressed ES of the last ``floor_window`` hours (both sides pooled, NaN with
    fewer than 100 returns), the floored rate and :func:`multiplier_for_rate` per market.
    """
    validate_tiers(tiers)
    risk = latest_risk_many(closes, model, horizon)
    c = np.asarray(closes, dtype=np.float64)
    stressed = np.full(c.shape[1], np.nan)
    if policy.floor_fraction > 0:
        r = np.diff(np.log(c), axis=0)
        summed = r
        if horizon > 1:
            summed = np.lib.stride_tricks.sliding_window_view(r, horizon, axis=0).sum(axis=-1)
        if policy.floor_window is not None:
            summed = summed[-policy.floor_window :]
        if summed.shape[0] >= 100:
            tail = empirical_var_es(pooled(summed, None), model.confidence, axis=0)
            stressed = to_notional_loss(tail.es, "short")
    floor = policy.floor_fraction * stressed
    rate = floored_rate(risk.rate, stressed, policy.floor_fraction)
    if not np.all(np.isfinite(rate)):
        raise ValueError("a market's rate is not finite (too few prices for the model?)")
    tier0 = tiers[0].maintenance_rate
    multipliers = tuple(multiplier_for_rate(float(x), tier0) for x in rate)
    return MarketsTarget(risk, stressed, floor, rate, multipliers)


# ---------------------------------------------------------------------------------------------
# One market, now (the keeper's call)


@dataclass(frozen=True)
class RiskSnapshot:
    """The risk figures behind one update (fractions of notional over the horizon)."""

    observed_at: int
    sigma_hourly: float
    sigma_annual: float
    var_long: float
    var_short: float
    es_long: float
    es_short: float
    model_rate: float
    stressed_es: float
    floor_rate: float
    target_rate: float


@dataclass(frozen=True)
class Calibration:
    """What the keeper would sign for one market now, and why."""

    snapshot: RiskSnapshot
    proposed: int
    clamped: int
    push: bool
    reason: str
    model_hash: bytes
    update: RiskUpdate | None


def snapshot_at(series: TargetSeries, index: int, observed_at: int) -> RiskSnapshot:
    """The figures of ``series`` at ``index``."""
    risk = series.risk
    sigma = float(risk.sigma[index])
    return RiskSnapshot(
        observed_at=observed_at,
        sigma_hourly=sigma,
        sigma_annual=sigma * ANNUALISATION,
        var_long=float(risk.var_long[index]),
        var_short=float(risk.var_short[index]),
        es_long=float(risk.es_long[index]),
        es_short=float(risk.es_short[index]),
        model_rate=float(risk.rate[index]),
        stressed_es=float(series.stressed_es[index]),
        floor_rate=float(series.floor[index]),
        target_rate=float(series.rate[index]),
    )


def calibrate(
    candles: Candles,
    *,
    market_id: int,
    now: int,
    state: MarketState | None = None,
    guardrails: Guardrails = DEFAULT_GUARDRAILS,
    tiers: Sequence[Tier] = DEFAULT_TIERS,
    model: RiskModel = RECOMMENDED_MODEL,
    policy: Policy = DEFAULT_POLICY,
    horizon: int = 1,
    funding_rate: int = 0,
) -> Calibration:
    """Risk, multiplier, clamp, hysteresis and a checked :class:`RiskUpdate` for one market.

    ``candles`` are the market's hourly closes up to now; the update is stamped
    ``observed_at`` = close time of the last candle. ``state`` is the registry's current state
    of the market (``None``: never updated).

    Raises
    ------
    ValueError
        If the tiers or guardrails would be rejected by the registry, the last candle closes
        after ``now``, or the history is too short for the model.
    """
    validate_tiers(tiers)
    validate_guardrails(guardrails)
    state = state or MarketState()
    observed_at = int(candles.timestamps[-1]) + HOUR
    if observed_at > now:
        raise ValueError(f"the last candle closes at {observed_at}, after now ({now})")
    series = target_series(candles, model, policy, horizon)
    snap = snapshot_at(series, -1, observed_at)
    if not math.isfinite(snap.target_rate):
        raise ValueError(
            f"{candles.symbol or 'market'}: {len(candles)} prices are not enough for {model.name}"
        )
    proposed = multiplier_for_rate(snap.target_rate, tiers[0].maintenance_rate)
    clamped = clamp_multiplier(state, guardrails, proposed, now)
    digest = model_hash(
        model,
        policy,
        horizon,
        int(candles.timestamps[0]),
        int(candles.timestamps[-1]),
        len(candles),
    )
    push, reason = push_decision(state, guardrails, clamped, now, policy.hysteresis)
    if push and observed_at <= state.observed_at:
        push, reason = False, "no candle newer than the last update"
    update = None
    if push:
        update = RiskUpdate(
            market_id=market_id,
            multiplier=clamped,
            funding_rate=with_funding_bound(funding_rate, guardrails),
            observed_at=observed_at,
            deadline=now + policy.deadline_seconds,
            model_hash=digest,
        )
        try:
            apply_update(state, guardrails, update, now)
        except UpdateRejected as exc:
            log.error("market %d: the registry would reject %s: %s", market_id, update, exc.reason)
            push, reason, update = False, f"rejected: {exc.reason}", None
    log.info(
        "market %d: rate %.4f%% (model %.4f%%, floor %.4f%%) -> multiplier %.4f (clamped %.4f): "
        "%s, %s",
        market_id,
        100 * snap.target_rate,
        100 * snap.model_rate,
        100 * snap.floor_rate,
        proposed / WAD,
        clamped / WAD,
        "push" if push else "skip",
        reason,
    )
    return Calibration(snap, proposed, clamped, push, reason, digest, update)


__all__ = [
    "DEFAULT_GUARDRAILS",
    "DEFAULT_POLICY",
    "DEFAULT_TIERS",
    "MODEL_VERSION",
    "PREVIOUS_GUARDRAILS",
    "PREVIOUS_TIERS",
    "RECOMMENDED_MODEL",
    "REFRESH_FRACTION",
    "Calibration",
    "MarketsTarget",
    "Policy",
    "RiskSnapshot",
    "TargetSeries",
    "calibrate",
    "canonical_model_json",
    "floored_rate",
    "latest_targets_many",
    "model_hash",
    "multiplier_for_rate",
    "push_decision",
    "rate_of_multiplier",
    "snapshot_at",
    "stressed_es_series",
    "target_series",
]
