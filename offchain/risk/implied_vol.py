"""An implied-volatility index (Deribit DVOL) as an input to the margin model.

DVOL is the 30-day implied volatility of BTC or ETH options, annualised, in percent. Two layouts
are read (``../shared/data``): hourly candles ``timestamp,datetime_utc,date,hour,dvol_open,
dvol_high,dvol_low,dvol_close`` (``timestamp`` in milliseconds at the start of the hour) and daily
candles ``date,symbol,open,high,low,close`` (newest first). An observation is known at the end
of its period (the hour's close; the day's close); :func:`align_to_candles` gives each price
candle the last index value known at that candle's close, or NaN when the last one is older than
``max_age`` (the hourly file has days with only their 00:00 row: those hours stay covered for a
day and then fall back to historical volatility alone).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from offchain.risk.prices import HOUR, MAX_FILE_BYTES, Candles, parse_time

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DAY_S = 86_400
HOURS_PER_YEAR = 8760


@dataclass(frozen=True)
class VolIndex:
    """Index observations: period start (UTC s), value (annualised %), and period length."""

    starts: IntArray
    values: FloatArray
    period: int
    source: str = ""

    def __len__(self) -> int:
        return int(self.starts.size)


def load_vol_index(path: str | Path) -> VolIndex:
    """Read an hourly or daily DVOL file (see the module docstring); ``ValueError`` naming the
    file when it is neither, or has no usable row."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"{path}: too large for a volatility index file")
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot be read as a CSV ({exc})") from exc
    if not rows:
        raise ValueError(f"{path}: no rows")
    cols = set(rows[0])
    if {"timestamp", "dvol_close"} <= cols:
        time_col, value_col, period = "timestamp", "dvol_close", HOUR
    elif {"date", "close"} <= cols:
        time_col, value_col, period = "date", "close", DAY_S
    else:
        raise ValueError(f"{path}: expected dvol_close (hourly) or date,close (daily) columns")
    seen: dict[int, float] = {}
    for row in rows:
        t = parse_time(row.get(time_col) or "")
        try:
            v = float(row.get(value_col) or "nan")
        except ValueError:
            continue
        if t is None or not math.isfinite(v) or v <= 0:
            continue
        seen[t - t % period] = v
    if not seen:
        raise ValueError(f"{path}: no usable index value")
    starts = np.array(sorted(seen), dtype=np.int64)
    return VolIndex(starts, np.array([seen[int(s)] for s in starts]), period, str(path))


def align_to_candles(index: VolIndex, candles: Candles, max_age: int | None = None) -> FloatArray:
    """The index value known at each candle's close (annualised %), NaN when none is, or the
    last is older than ``max_age`` seconds (default: a day for hourly, two days for daily)."""
    max_age = max_age if max_age is not None else (DAY_S if index.period == HOUR else 2 * DAY_S)
    known_at = index.starts + index.period
    closes = candles.timestamps + HOUR
    j = np.searchsorted(known_at, closes, side="right") - 1
    out = np.full(len(candles), np.nan)
    ok = j >= 0
    jj = np.where(ok, j, 0)
    fresh = ok & (closes - known_at[jj] <= max_age)
    out[fresh] = index.values[jj[fresh]]
    return out


def hourly_volatility(annual_percent: FloatArray) -> FloatArray:
    """Annualised percent to a one-hour volatility: ``x / 100 / sqrt(8760)``."""
    return np.asarray(annual_percent, dtype=np.float64) / 100 / math.sqrt(HOURS_PER_YEAR)


__all__ = ["VolIndex", "align_to_candles", "hourly_volatility", "load_vol_index"]
