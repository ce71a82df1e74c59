"""Stress scenarios: the worst historical windows and user-given shocks, as long and short losses.

Losses are fractions of notional: a price move ``R = P_end / P_start - 1`` costs a long ``-R``
and a short ``+R`` (a negative loss is a gain).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from offchain.risk.prices import HOUR, Candles
from offchain.risk.risk_measures import Side, check_side

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class StressLoss:
    """One scenario: the price move and what it costs each side.

    ``start`` and ``end`` are UTC seconds (the closes the move runs between) for a historical
    window, ``None`` for a hypothetical shock.
    """

    label: str
    move: float
    start: int | None = None
    end: int | None = None

    @property
    def loss_long(self) -> float:
        """``-move``."""
        return -self.move

    @property
    def loss_short(self) -> float:
        """``+move``."""
        return self.move


def window_moves(close: FloatArray, horizon: int) -> FloatArray:
    """``P_{t+h} / P_t - 1`` for every start ``t`` (``len(close) - horizon`` values)."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 hour, got {horizon}")
    c = np.asarray(close, dtype=np.float64)
    if len(c) <= horizon:
        raise ValueError(f"need more than {horizon} prices for {horizon}-hour windows")
    return c[horizon:] / c[:-horizon] - 1


def worst_starts(moves: FloatArray, side: Side, k: int, horizon: int) -> list[int]:
    """Starts of the ``k`` worst non-overlapping windows for ``side`` (worst first).

    Two windows overlap when their starts are less than ``horizon`` apart; a window is skipped
    when it overlaps one already chosen (so one crash is not counted ``horizon`` times).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    loss = -np.asarray(moves) if check_side(side) == "long" else np.asarray(moves)
    chosen: list[int] = []
    for i in np.argsort(-loss, kind="stable"):
        if all(abs(int(i) - j) >= horizon for j in chosen):
            chosen.append(int(i))
            if len(chosen) == k:
                break
    return chosen


def worst_windows(candles: Candles, horizon: int = 1, k: int = 5) -> dict[Side, list[StressLoss]]:
    """The ``k`` worst historical ``horizon``-hour windows for longs and for shorts."""
    moves = window_moves(candles.close, horizon)
    out: dict[Side, list[StressLoss]] = {}
    for side in ("long", "short"):
        out[side] = [
            StressLoss(
                label=f"worst {horizon}h for {side}s #{rank}",
                move=float(moves[i]),
                start=int(candles.timestamps[i]) + HOUR,
                end=int(candles.timestamps[i + horizon]) + HOUR,
            )
            for rank, i in enumerate(worst_starts(moves, side, k, horizon), start=1)
        ]
    return out


def shock_losses(shocks: Iterable[float]) -> list[StressLoss]:
    """Hypothetical instantaneous moves (``-0.3`` = price down 30%) as scenarios."""
    out = []
    for s in shocks:
        move = float(s)
        if not np.isfinite(move) or move <= -1:
            raise ValueError(f"a price move must be finite and above -100%, got {s}")
        out.append(StressLoss(label=f"shock {move:+.1%}", move=move))
    return out


__all__ = ["StressLoss", "shock_losses", "window_moves", "worst_starts", "worst_windows"]
