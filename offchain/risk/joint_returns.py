"""Markets joined on the hour, each standardised by its own volatility filter.

The input of the joint scenarios (:mod:`offchain.risk.scenarios`): hourly candles of two markets
or more become one table of rows (open times every market shares), with each market's close,
its one-step-ahead volatility forecast from its own history and the standardised return to the
next row, ``z_it = r_it / sigma_it`` (the single-market model's filter,
:func:`offchain.risk.risk_measures.variance_forecasts`). A joint residual vector exists only
where every market's next candle is the next row and one hour later, so no vector mixes a
one-hour return with one across a gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from offchain.risk.calibration import RECOMMENDED_MODEL
from offchain.risk.prices import HOUR, Candles
from offchain.risk.risk_measures import RiskModel, variance_forecasts

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class JointHistory:
    """Markets joined on the hour: row ``j`` is the candle opening at ``timestamps[j]`` in every
    market.

    ``sigma[j, i]`` is market ``i``'s volatility forecast (log units) for the return after
    candle ``j``, from its own closes up to candle ``j``. ``residual[j, i]`` is that return
    over ``sigma[j, i]``, a row of NaN unless every market's next candle is row ``j + 1`` and one
    hour later (the last row has none).
    """

    markets: tuple[str, ...]
    timestamps: IntArray
    close: FloatArray
    sigma: FloatArray
    residual: FloatArray

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def valid(self) -> BoolArray:
        """Rows with a joint residual vector."""
        return np.all(np.isfinite(self.residual), axis=1)


def common_hours(candles: Sequence[Candles]) -> IntArray:
    """Open times present in every series (sorted)."""
    if len(candles) < 2:
        raise ValueError(f"need at least two markets, got {len(candles)}")
    times = candles[0].timestamps
    for c in candles[1:]:
        times = np.intersect1d(times, c.timestamps, assume_unique=True)
    return times.astype(np.int64)


def joint_history(candles: Sequence[Candles], model: RiskModel = RECOMMENDED_MODEL) -> JointHistory:
    """Standardise each market by its own filter and join them on the hour.

    Raises
    ------
    ValueError
        With fewer than two markets or fewer than three common hours.
    """
    times = common_hours(candles)
    if len(times) < 3:
        raise ValueError(f"the markets share {len(times)} hours; need at least 3")
    n, m = len(times), len(candles)
    close = np.empty((n, m))
    sigma = np.empty((n, m))
    residual = np.full((n, m), np.nan)
    consecutive = np.append(np.diff(times) == HOUR, False)
    for i, c in enumerate(candles):
        idx = np.searchsorted(c.timestamps, times)
        sigma2, _ = variance_forecasts(c, model)
        s = np.sqrt(sigma2)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.append(c.log_returns() / s[:-1], np.nan)
        own_next = np.append(c.timestamps[1:], -1)[idx]
        ok = consecutive & (own_next == np.append(times[1:], -2))
        close[:, i] = c.close[idx]
        sigma[:, i] = s[idx]
        residual[:, i] = np.where(ok, z[idx], np.nan)
    residual[~np.all(np.isfinite(residual), axis=1)] = np.nan
    names = tuple(c.symbol or f"market{i}" for i, c in enumerate(candles))
    return JointHistory(names, times, close, sigma, residual)


__all__ = ["JointHistory", "common_hours", "joint_history"]
