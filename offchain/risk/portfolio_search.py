"""Adversarial books: the portfolio that slips furthest between the K scenarios.

At one hour, with the scenarios the keeper signed then, each market's tiered rate in force and
the filtered joint distribution behind the scenarios (the pool of standardised residual vectors,
rescaled by that hour's volatilities), the search looks for the signed notional weights ``w``
(gross ``sum |w_i| = 1``) that maximise

.. math:: \\rho(w) = \\frac{q_{99}(w)}{\\text{margin}(w)}, \\qquad
          q_{99}(w) = \\text{99\\% quantile of } -\\sum_i w_i
          \\left(e^{\\sigma_i \\sqrt h z_i} - 1\\right) \\text{ over the pool}

with ``margin(w)`` the on-chain rule (portfolio formula for two positions or more, tiered sum
for one). ``rho > 1`` means the margin does not cover the book's model 99% loss; the residual
charge is there to keep the worst ``rho`` near or below one.

The search: every direction of a grid on the sphere (about 3 degrees apart, both halves), then
Nelder-Mead from the five best. The objective is a quantile, piecewise constant in ``w``;
Nelder-Mead needs no gradient and the grid start keeps it from a poor local optimum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

from offchain.risk.risk_measures import check_confidence, tail_count
from offchain.risk.scenarios import sphere_directions

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class AdversarialResult:
    """The book found, its model 99% loss and its margin (fractions of gross notional)."""

    markets: tuple[str, ...]
    weights: FloatArray
    true_loss: float
    margin: float
    tiered: float
    worst_scenario_loss: float
    at: int

    @property
    def ratio(self) -> float:
        """``true_loss / margin``: above 1 the margin misses the book's 99% loss."""
        return self.true_loss / self.margin if self.margin > 0 else math.inf

    def to_json(self) -> dict[str, object]:
        return {
            "at": self.at,
            "weights": {m: float(w) for m, w in zip(self.markets, self.weights, strict=True)},
            "true_loss_99": self.true_loss,
            "margin": self.margin,
            "tiered_sum": self.tiered,
            "worst_scenario_loss": self.worst_scenario_loss,
            "ratio": self.ratio,
        }


def gross_normalised(w: FloatArray) -> FloatArray:
    """Rows scaled to ``sum |w_i| = 1``."""
    x = np.atleast_2d(np.asarray(w, dtype=np.float64))
    return x / np.abs(x).sum(axis=1, keepdims=True)


def model_losses(
    pool: FloatArray,
    sigma: FloatArray,
    weights: FloatArray,
    horizon: int = 1,
    confidence: float = 0.99,
) -> FloatArray:
    """``q_99(w)`` for each row of ``weights`` (module docstring), fractions of gross."""
    check_confidence(confidence)
    moves = np.expm1(np.asarray(pool) * np.asarray(sigma) * math.sqrt(horizon))  # (N, M)
    w = np.atleast_2d(weights)
    n = len(moves)
    k = tail_count(n, confidence)
    out = np.empty(len(w))
    for lo in range(0, len(w), 64):
        loss = -(moves @ w[lo : lo + 64].T)
        out[lo : lo + 64] = np.partition(loss, n - k, axis=0)[n - k]
    return out


def book_margin(
    weights: FloatArray,
    shocks: IntArray,
    rates: FloatArray,
    residual: float,
    floor: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(margin, tiered, L)`` of each row of ``weights`` under ``shocks`` (bps, ``(K, M)``)
    and tiered ``rates`` (``(M,)``); one-position books keep the tiered sum."""
    w = np.atleast_2d(weights)
    tiered = np.abs(w) @ np.asarray(rates)
    worst = np.maximum(0.0, np.max(-(w @ np.asarray(shocks, dtype=np.float64).T) / 1e4, axis=1))
    portfolio = np.minimum(tiered, np.maximum(worst + residual * tiered, floor * tiered))
    eligible = np.count_nonzero(w, axis=1) >= 2
    return np.where(eligible, portfolio, tiered), tiered, worst


def search_adversarial(
    pool: FloatArray,
    sigma: FloatArray,
    shocks: IntArray,
    rates: FloatArray,
    residual: float,
    floor: float,
    markets: Sequence[str],
    *,
    horizon: int = 1,
    confidence: float = 0.99,
    spacing_degrees: float = 3.0,
    at: int = 0,
) -> AdversarialResult:
    """The book with the largest ``q_99(w) / margin(w)`` (module docstring)."""
    m = len(markets)
    x = np.asarray(pool, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != m:
        raise ValueError(f"pool must be (N, {m}), got {x.shape}")
    half = sphere_directions(m, spacing_degrees)
    grid = gross_normalised(np.vstack((half, -half)))

    def ratios(w: FloatArray) -> FloatArray:
        margin, _, _ = book_margin(w, shocks, rates, residual, floor)
        return model_losses(x, sigma, w, horizon, confidence) / margin

    grid_ratio = ratios(grid)
    best_w, best_r = grid[int(np.argmax(grid_ratio))], float(np.max(grid_ratio))
    for start in grid[np.argsort(grid_ratio)[::-1][:5]]:
        res = minimize(
            lambda v: -float(ratios(gross_normalised(v))[0]) if np.abs(v).sum() > 0 else 0.0,
            start,
            method="Nelder-Mead",
            options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 400},
        )
        if -res.fun > best_r:
            best_w, best_r = gross_normalised(res.x)[0], float(-res.fun)
    margin, tiered, worst = book_margin(best_w, shocks, rates, residual, floor)
    true = model_losses(x, sigma, best_w, horizon, confidence)
    return AdversarialResult(
        markets=tuple(markets),
        weights=best_w,
        true_loss=float(true[0]),
        margin=float(margin[0]),
        tiered=float(tiered[0]),
        worst_scenario_loss=float(worst[0]),
        at=at,
    )


__all__ = [
    "AdversarialResult",
    "book_margin",
    "gross_normalised",
    "model_losses",
    "search_adversarial",
]
