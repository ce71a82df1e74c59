"""Funding in maintenance, sized with data: breaches it explains and the reserve that covers it.

The single-market model's walk-forward backtest (:func:`offchain.risk.backtest.run_backtest`,
the shipped recommended model) gives, for each hour ``t``, the maintenance rate in force ``m_t``
and the price loss over the liquidation horizon ``h`` of a long and of a short (fractions of
notional). The funding history, replayed through the reference mode
(:func:`offchain.risk.funding_history.replay_reference`: the rate the registry would carry,
re-signed hourly, inside the bound), gives the rate in force ``r`` at every instant.

**Funding over the horizon.** A long pays ``F(s) = integral_s^{s+h} r`` from an instant ``s``
(a short pays ``-F``). In the backtest's own frame ``s = t`` (the hour's update); a breach can
happen at any instant of the hour, ``s = t + u * 3600`` with ``u`` in ``[0, 1)``, and because the
rate only changes at the hourly ticks ``F`` is linear in ``u`` between ``A = F(t)`` and
``B = F(t + 3600)``.

**Breaches funding explains** (backtest frame): a price breach is ``loss > m``; with funding,
``loss + F(t) > m``. Funding *explains* the breaches of the second kind that are not of the
first (and *saves* those of the first that received funding offsets).

**Reserve.** The engine adds ``N * |r| * S`` to the paying side's maintenance (``S`` the
market's ``set_funding_reserve`` seconds, ``r`` the rate in force at the breach: ``r_t`` for the
whole hour). The reserve covers an instant when the side's funding over the horizon is at most
the reserve: ``F(u) <= max(+-r_t, 0) * S``. **Coverage** is the share of paying instants
(``F(u) > 0``, ``u`` uniform over each hour, every hour of the three markets and both sides
pooled) that the reserve covers, computed exactly from the linear ``F(u)``
(:func:`measure_at_most`). A side that receives at the breach carries no reserve, so a sign
flip inside the horizon is never covered: coverage cannot reach 100%.

**Rule** (frozen on data up to 2021-12-31): ``S`` is the smallest multiple of 900 s (at most a
day, the engine's limit) whose pooled coverage on 2019-09..2021-12 is at least 99%; if none is,
the day. 2022-2023 is reported at that ``S``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from offchain.risk.backtest import BacktestConfig, BacktestResult, run_backtest
from offchain.risk.funding import HOUR_S
from offchain.risk.funding_history import ReferenceReplay
from offchain.risk.prices import Candles

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

RESERVE_STEP_S = 900
MAX_RESERVE_S = 86_400  # the engine's limit (set_funding_reserve)
COVERAGE_TARGET = 0.99
RELATIVE_TOLERANCE = 1e-9  # the float integral of a constant rate against rate * seconds


def model_margins(candles: Candles, horizon: int = 1, progress: bool = False) -> BacktestResult:
    """The recommended model's walk-forward backtest alone (no candidates, no flat baselines):
    its maintenance rate in force and the horizon losses per evaluated hour."""
    config = BacktestConfig(horizon=horizon, candidates=(), flat_rates=())
    return run_backtest(candles, config, progress=progress)


# ---------------------------------------------------------------------------------------------
# Pure pieces


def measure_at_most(a: FloatArray, b: FloatArray, x: FloatArray | float) -> FloatArray:
    """The share of ``u`` in ``[0, 1]`` with ``a + (b - a) * u <= x``, elementwise.

    Examples
    --------
    >>> float(measure_at_most(np.array([0.0]), np.array([2.0]), 1.0)[0])
    0.5
    >>> float(measure_at_most(np.array([2.0]), np.array([0.0]), 0.5)[0])
    0.25
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    x = np.broadcast_to(np.asarray(x, dtype=np.float64), a.shape)
    out = np.where(np.maximum(a, b) <= x, 1.0, 0.0)
    cross = (np.minimum(a, b) <= x) & (x < np.maximum(a, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(cross, (x - a) / np.where(b != a, b - a, 1.0), 0.0)
    return np.where(cross, np.where(b > a, u, 1.0 - u), out)


def coverage_parts(a: FloatArray, b: FloatArray, reserve: FloatArray) -> tuple[float, float]:
    """``(covered, paying)``: the measure of instants with ``0 < F <= reserve`` and with
    ``F > 0`` (``F`` linear from ``a`` to ``b`` over each hour)."""
    tol = RELATIVE_TOLERANCE * np.abs(reserve)
    below_zero = measure_at_most(a, b, 0.0)
    paying = float(np.sum(1.0 - below_zero))
    covered = float(np.sum(measure_at_most(a, b, reserve + tol) - below_zero))
    return covered, paying


@dataclass(frozen=True)
class BreachCounts:
    """Breaches of one side: price only, with funding, with funding and the reserve."""

    hours: int
    price: int
    with_funding: int
    explained: int  # funding turns a non-breach into a breach
    saved: int  # funding received turns a breach into a non-breach
    with_reserve: int

    @property
    def explained_share(self) -> float:
        """Breaches funding explains over breaches with funding."""
        return self.explained / self.with_funding if self.with_funding else 0.0


def breach_counts(
    loss: FloatArray, margin: FloatArray, paid: FloatArray, reserve: FloatArray
) -> BreachCounts:
    """:class:`BreachCounts` of one side (module docstring; backtest frame)."""
    price = loss > margin
    funded = loss + paid > margin
    return BreachCounts(
        hours=len(loss),
        price=int(price.sum()),
        with_funding=int(funded.sum()),
        explained=int((~price & funded).sum()),
        saved=int((price & ~funded).sum()),
        with_reserve=int((loss + paid > margin + reserve).sum()),
    )


# ---------------------------------------------------------------------------------------------
# The join


@dataclass(frozen=True)
class MarketHours:
    """One market's evaluated hours with the model's margin and the funding over the horizon."""

    symbol: str
    horizon: int
    times: IntArray
    margin: FloatArray
    loss_long: FloatArray
    loss_short: FloatArray
    rate: FloatArray  # in force during [t, t + 1 h), per second
    paid_at_update: FloatArray  # a long's funding over [t, t + h]  (A)
    paid_before_next: FloatArray  # a long's funding over [t + 1 h, t + 1 h + h]  (B)

    def window(self, start: int | None, stop: int | None) -> MarketHours:
        """Hours with ``start <= t < stop``."""
        keep = np.ones(len(self.times), dtype=bool)
        if start is not None:
            keep &= self.times >= start
        if stop is not None:
            keep &= self.times < stop
        return MarketHours(
            self.symbol,
            self.horizon,
            self.times[keep],
            self.margin[keep],
            self.loss_long[keep],
            self.loss_short[keep],
            self.rate[keep],
            self.paid_at_update[keep],
            self.paid_before_next[keep],
        )

    def sides(self) -> tuple[tuple[str, FloatArray, FloatArray, FloatArray, FloatArray], ...]:
        """``(side, loss, A, B, reserve rate)`` for the long and the short."""
        return (
            ("long", self.loss_long, self.paid_at_update, self.paid_before_next,
             np.maximum(self.rate, 0.0)),
            ("short", self.loss_short, -self.paid_at_update, -self.paid_before_next,
             np.maximum(-self.rate, 0.0)),
        )  # fmt: skip


def join(
    result: BacktestResult, replay: ReferenceReplay, model: str = "recommended"
) -> MarketHours:
    """Join the backtest's hours with the replayed funding: every hour ``t`` whose horizon
    (and the next hour's) lies inside the replay."""
    h_s = result.horizon * HOUR_S
    t = np.asarray(result.times, dtype=np.int64)
    keep = (t >= replay.ticks[0]) & (t + HOUR_S + h_s <= replay.ticks[-1])
    if not keep.any():
        raise ValueError(
            f"{result.asset}: no backtest hour inside the funding history of {replay.symbol}"
        )
    t = t[keep]
    return MarketHours(
        symbol=replay.symbol,
        horizon=result.horizon,
        times=t,
        margin=np.asarray(result.margins[model])[keep],
        loss_long=np.asarray(result.loss_long)[keep],
        loss_short=np.asarray(result.loss_short)[keep],
        rate=replay.rate_at(t),
        paid_at_update=replay.funding_between(t, t + h_s),
        paid_before_next=replay.funding_between(t + HOUR_S, t + HOUR_S + h_s),
    )


# ---------------------------------------------------------------------------------------------
# Coverage and the rule


def coverage(markets: Sequence[MarketHours], seconds: int) -> float:
    """Pooled coverage of paying instants (both sides, every market) by a reserve of
    ``seconds`` of the rate in force (module docstring)."""
    covered = paying = 0.0
    for m in markets:
        for _, _, a, b, base in m.sides():
            c, p = coverage_parts(a, b, base * seconds)
            covered += c
            paying += p
    return covered / paying if paying else 1.0


def worst_instant_coverage(markets: Sequence[MarketHours], seconds: int) -> float:
    """Share of paying side-hours covered at every instant of the hour (``max(A, B)``)."""
    covered = paying = 0
    for m in markets:
        for _, _, a, b, base in m.sides():
            worst = np.maximum(a, b)
            pay = worst > 0
            reserve = base * seconds
            covered += int((pay & (worst <= reserve * (1 + RELATIVE_TOLERANCE))).sum())
            paying += int(pay.sum())
    return covered / paying if paying else 1.0


def coverage_curve(
    markets: Sequence[MarketHours], step: int = RESERVE_STEP_S, top: int = MAX_RESERVE_S
) -> tuple[IntArray, FloatArray]:
    """``(seconds, coverage)`` on the grid ``0, step, ..., top``."""
    grid = np.arange(0, top + step, step, dtype=np.int64)
    return grid, np.array([coverage(markets, int(s)) for s in grid])


def choose_reserve_seconds(
    markets: Sequence[MarketHours],
    target: float = COVERAGE_TARGET,
    step: int = RESERVE_STEP_S,
    top: int = MAX_RESERVE_S,
) -> tuple[int, bool]:
    """The rule (module docstring): ``(seconds, reached)``."""
    if not 0 < target <= 1:
        raise ValueError(f"target must lie in (0, 1], got {target}")
    grid, cov = coverage_curve(markets, step, top)
    hit = np.flatnonzero(cov >= target)
    if hit.size:
        return int(grid[hit[0]]), True
    return top, False


def flip_share(markets: Sequence[MarketHours]) -> float:
    """Share of paying instants whose side carried no reserve (it received at the breach)."""
    flips = paying = 0.0
    for m in markets:
        for _, _, a, b, base in m.sides():
            below = measure_at_most(a, b, 0.0)
            pay = 1.0 - below
            flips += float(np.sum(np.where(base <= 0, pay, 0.0)))
            paying += float(np.sum(pay))
    return flips / paying if paying else 0.0


def reserve_to_margin(markets: Sequence[MarketHours], seconds: int) -> float:
    """Average reserve over average maintenance of the paying side (both fractions of
    notional), over every hour with a non-zero rate."""
    reserve = margin = 0.0
    for m in markets:
        live = m.rate != 0
        reserve += float(np.sum(np.abs(m.rate[live]) * seconds))
        margin += float(np.sum(m.margin[live]))
    return reserve / margin if margin else 0.0


__all__ = [
    "COVERAGE_TARGET",
    "MAX_RESERVE_S",
    "RESERVE_STEP_S",
    "BreachCounts",
    "MarketHours",
    "breach_counts",
    "choose_reserve_seconds",
    "coverage",
    "coverage_curve",
    "coverage_parts",
    "flip_share",
    "join",
    "measure_at_most",
    "model_margins",
    "reserve_to_margin",
    "worst_instant_coverage",
]
