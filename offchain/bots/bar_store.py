"""The keeper's history: finished price bars per market, persisted in SQLite across restarts.

The live model needs the same history the backtest scores with (every hour since the data start
for an expanding residual tail, a year for the stress rank, a month of warm-up), far more than a
process should rebuild from feed readings after each restart. Bars are stored once, when they are
finished, and never rewritten; a history file (the backtest's own CSV, read by the same loader)
seeds the store, and later bars are appended as the feed produces them.

Table ``bars(market, open_time, close, vol_index)``: ``open_time`` is the bar's start (UTC
seconds), ``close`` its last accepted price, ``vol_index`` an optional volatility-index reading
(annualised, in percent, as DVOL) taken when the bar finished. ``":memory:"`` keeps nothing
across restarts (tests, dry runs).
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

log = logging.getLogger("dmm.bars")

SCHEMA = """
CREATE TABLE IF NOT EXISTS bars (
    market INTEGER NOT NULL,
    open_time INTEGER NOT NULL,
    close REAL NOT NULL,
    vol_index REAL,
    PRIMARY KEY (market, open_time)
)
"""


class BarStore:
    """Finished bars of every market the keeper drives (see the module docstring)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(f"bar store {self.path}: cannot be opened ({exc})") from exc

    def close(self) -> None:
        self._db.close()

    def last_open_time(self, market_id: int) -> int | None:
        """The start of the market's newest stored bar (``None`` when it has none)."""
        row = self._db.execute(
            "SELECT MAX(open_time) FROM bars WHERE market = ?", (market_id,)
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def count(self, market_id: int) -> int:
        return int(
            self._db.execute("SELECT COUNT(*) FROM bars WHERE market = ?", (market_id,)).fetchone()[
                0
            ]
        )

    def append(
        self,
        market_id: int,
        open_times: Sequence[int] | IntArray,
        closes: Sequence[float] | FloatArray,
        vol_index: Sequence[float | None] | None = None,
    ) -> int:
        """Store the bars newer than the market's newest (older ones are ignored: a stored bar
        is never rewritten); returns how many were added. Prices must be finite and positive."""
        last = self.last_open_time(market_id)
        rows = []
        for i, (t, c) in enumerate(zip(open_times, closes, strict=True)):
            t, c = int(t), float(c)
            if last is not None and t <= last:
                continue
            if not math.isfinite(c) or c <= 0:
                raise ValueError(f"market {market_id}: bar at {t} has an unusable close {c!r}")
            v = None if vol_index is None else vol_index[i]
            rows.append((market_id, t, c, None if v is None or not math.isfinite(v) else float(v)))
        return self._insert(rows)

    def seed(self, market_id: int, open_times: IntArray, closes: FloatArray) -> int:
        """Add history (a loaded price file) wherever the store has no bar yet; returns how
        many bars were added. Bars already stored win."""
        rows = [
            (market_id, int(t), float(c), None) for t, c in zip(open_times, closes, strict=True)
        ]
        return self._insert(rows, ignore=True)

    def set_vol_index(self, market_id: int, open_time: int, value: float) -> None:
        """Record a volatility-index reading for a stored bar."""
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"market {market_id}: unusable volatility index {value!r}")
        self._db.execute(
            "UPDATE bars SET vol_index = ? WHERE market = ? AND open_time = ?",
            (float(value), market_id, int(open_time)),
        )

    def bars(self, market_id: int) -> tuple[IntArray, FloatArray, FloatArray]:
        """Every stored bar of the market, oldest first: open times, closes, index (NaN if none)."""
        rows = self._db.execute(
            "SELECT open_time, close, vol_index FROM bars WHERE market = ? ORDER BY open_time",
            (market_id,),
        ).fetchall()
        t = np.array([r[0] for r in rows], dtype=np.int64)
        c = np.array([r[1] for r in rows], dtype=np.float64)
        v = np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64)
        return t, c, v

    def _insert(
        self, rows: list[tuple[int, int, float, float | None]], ignore: bool = False
    ) -> int:
        if not rows:
            return 0
        verb = "INSERT OR IGNORE" if ignore else "INSERT"
        before = self._db.total_changes
        try:
            self._db.execute("BEGIN")
            self._db.executemany(
                f"{verb} INTO bars (market, open_time, close, vol_index) VALUES (?, ?, ?, ?)", rows
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise ValueError(f"bar store {self.path}: write failed ({exc})") from exc
        return self._db.total_changes - before


__all__ = ["BarStore"]
