"""Anti-procyclicality: the EMIR tools that dampen margin swings, and how swings are measured.

A margin that follows measured risk rises in a crash, when positions are hardest to fund
(procyclicality). EMIR's RTS 153/2013 art. 28(1) gives a central counterparty three tools; each
is a pure function here, applied to the hourly rate a model proposes:

* (a) :func:`buffer_release`: a buffer of at least 25% of the margin, held in calm markets and
  **released in stress**. The release follows the stress rank of the current volatility
  (:func:`stress_rank`): the full buffer at the bottom of the trailing year's range, none at
  its top. It lifts calm-hour margins (where a volatility filter under-covers: volatility of
  volatility, jumps out of quiet markets) and dampens the rise into a crisis;
* (b) :func:`stressed_weight`: at least 25% weight on a stressed period, here
  ``(1 - w) rate + w stressed`` with ``stressed`` the model's rate at the most volatile month
  of the look-back;
* (c) :func:`lookback_floor`: a margin never below the one computed over a ten-year look-back
  (unfiltered historical VaR of all hourly returns since the data start, at most ten years).

Speed limit: :func:`rise_budget` caps the rise of the proposed rate within any window (a day) to a
number of points of notional; the registry's relative step limits (``max_increase``) cannot
express an absolute daily bound, so the keeper applies it before it clamps.

Measures (on the margin in force, sampled hourly): :func:`peak_to_trough` and
:func:`max_rise` over 1, 5 and 30 days (:func:`increases`), in points of notional.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DAY_H = 24
EMIR_MIN_STRENGTH = 0.25  # art. 28(1)(a) and (b): at least 25%


# ---------------------------------------------------------------------------------------------
# Measures


def max_rise(margin: FloatArray, window: int = DAY_H) -> float:
    """Largest rise of the margin within ``window`` hours.

    .. math:: \\max_t \\left(m_t - \\min(m_{t-w}, \\dots, m_t)\\right)

    Catches a rise spread over several updates, which the point-to-point ``m_t - m_{t-w}`` can
    miss.

    Examples
    --------
    >>> max_rise(np.array([1.0, 1.5, 2.0, 0.5, 3.0]), window=2)
    2.5
    """
    m = np.asarray(margin, dtype=np.float64)
    if m.size == 0:
        return 0.0
    if window < 1:
        raise ValueError(f"window must be at least 1 hour, got {window}")
    padded = np.concatenate((np.full(window, m[0]), m))
    lows = np.lib.stride_tricks.sliding_window_view(padded, window + 1).min(axis=1)
    return float(np.max(m - lows))


def peak_to_trough(margin: FloatArray) -> float:
    """``max(m) / min(m)``: how many times over the margin swings."""
    m = np.asarray(margin, dtype=np.float64)
    if m.size == 0 or not np.all(m > 0):
        raise ValueError("margin must be a non-empty positive series")
    return float(m.max() / m.min())


def increases(margin: FloatArray) -> dict[str, float]:
    """SPEC's ``max_increase_1d``, ``_5d`` and ``_30d`` (points of notional, as fractions)."""
    return {
        "max_increase_1d": max_rise(margin, DAY_H),
        "max_increase_5d": max_rise(margin, 5 * DAY_H),
        "max_increase_30d": max_rise(margin, 30 * DAY_H),
    }


# ---------------------------------------------------------------------------------------------
# Tools


def stress_rank(
    sigma: FloatArray, anchors: IntArray, window: int, min_obs: int = DAY_H
) -> FloatArray:
    """Where each hour's volatility lies within the trailing ``window`` hours, in ``[0, 1]``.

    For hour ``t`` after anchor ``e`` (the last anchor at or before ``t``), with
    ``R_e = {sigma_s : e - window < s <= e}``:

    .. math:: \\mathrm{rank}_t = \\frac{\\#\\{x \\in R_e : x \\le \\sigma_t\\}}{|R_e|}

    The reference set moves only at anchors (daily), the current volatility every hour. NaN
    before the first anchor with ``min_obs`` finite values.
    """
    s = np.asarray(sigma, dtype=np.float64)
    out = np.full(s.size, np.nan)
    a = np.asarray(anchors, dtype=np.int64)
    bounds = np.append(a, s.size)
    for j, e in enumerate(a):
        ref = s[max(0, int(e) - window + 1) : int(e) + 1]
        ref = np.sort(ref[np.isfinite(ref)])
        if ref.size < min_obs:
            continue
        seg = slice(int(e), int(bounds[j + 1]))
        out[seg] = np.searchsorted(ref, s[seg], side="right") / ref.size
    return out


def buffer_release(rate: FloatArray, rank: FloatArray, strength: float) -> FloatArray:
    """Art. 28(1)(a): ``rate * (1 + b (1 - rank))``, the buffer ``b`` released as stress rises.

    Examples
    --------
    >>> buffer_release(np.array([0.01, 0.01, 0.01]), np.array([0.0, 0.5, 1.0]), 0.5)
    array([0.015 , 0.0125, 0.01  ])
    """
    if strength < 0:
        raise ValueError(f"buffer strength must be non-negative, got {strength}")
    return np.asarray(rate, dtype=np.float64) * (1 + strength * (1 - np.asarray(rank)))


def stressed_weight(rate: FloatArray, stressed: FloatArray, weight: float) -> FloatArray:
    """Art. 28(1)(b): ``(1 - w) rate + w stressed``; ``stressed`` the stressed-period rate."""
    if not 0 <= weight <= 1:
        raise ValueError(f"stressed weight must lie in [0, 1], got {weight}")
    return (1 - weight) * np.asarray(rate, dtype=np.float64) + weight * np.asarray(stressed)


def lookback_floor(rate: FloatArray, floor: FloatArray) -> FloatArray:
    """Art. 28(1)(c): ``max(rate, floor)``; NaN floors (too little history) are ignored."""
    return np.fmax(np.asarray(rate, dtype=np.float64), np.asarray(floor, dtype=np.float64))


def rise_budget(rate: FloatArray, budget: float, window: int = DAY_H) -> FloatArray:
    """Cap the rise of a proposed rate within any ``window`` hours at ``budget``.

    .. math:: b_t = \\min\\left(x_t,\\ \\min(b_{t-w}, \\dots, b_{t-1}) + B\\right)

    A recursion on its own output, so a shock is followed by a staircase of at most ``B`` per
    window; NaN inputs (warm-up) pass through and are left out of the window minimum.

    Examples
    --------
    >>> rise_budget(np.array([0.01, 0.08, 0.08, 0.08]), 0.03, window=2)
    array([0.01, 0.04, 0.04, 0.07])
    """
    if not budget > 0:
        raise ValueError(f"budget must be positive, got {budget}")
    if window < 1:
        raise ValueError(f"window must be at least 1 hour, got {window}")
    x = np.asarray(rate, dtype=np.float64)
    out = np.empty_like(x)
    lows: deque[tuple[int, float]] = deque()  # increasing values, with their hour
    for t in range(x.size):
        while lows and lows[0][0] < t - window:
            lows.popleft()
        value = float(x[t])
        if lows and value == value:  # not NaN
            value = min(value, lows[0][1] + budget)
        out[t] = value
        if value == value:
            while lows and lows[-1][1] >= value:
                lows.pop()
            lows.append((t, value))
    return out


__all__ = [
    "DAY_H",
    "EMIR_MIN_STRENGTH",
    "buffer_release",
    "increases",
    "lookback_floor",
    "max_rise",
    "peak_to_trough",
    "rise_budget",
    "stress_rank",
    "stressed_weight",
]
