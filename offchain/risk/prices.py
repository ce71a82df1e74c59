"""Hourly price candles: load, normalise and validate, with a report of every fix.

Two CSV layouts are read:

* the CryptoDataDownload / Binance layout
  ``unix,date,symbol,open,high,low,close,Volume <base>,Volume USDT,tradecount``, possibly after a
  first line that is a URL banner;
* a plain ``timestamp,close`` layout (``time``/``unix``/``date`` and ``price`` are accepted as
  column names too); the candle is then ``open = high = low = close`` and
  :attr:`Candles.has_ohlc` is ``False``.

Normalisation, in this order:

1. **Timestamps** become UTC seconds. A numeric time is read as microseconds above ``1e14``,
   milliseconds above ``1e11`` and seconds otherwise (``1e11`` s is the year 5138, ``1e11`` ms is
   1973, so the two ranges cannot be confused for market data). Text dates are read as ISO 8601
   (naive means UTC) or CryptoDataDownload's ``2017-08-17 06-AM``. When both a numeric time and a
   date are given the numeric time wins and a disagreement is noted (``date_disagrees_with_time``):
   the Binance files hold a segment whose dates are four hours behind their ``unix`` column,
   whose ``unix`` values are consistent with their neighbours. A time off the hour is moved to the
   start of its hour (repaired, ``off_hour_timestamp``).
2. **Row validation**: a row with the wrong number of fields, an unreadable or implausible time
   (before 2009 or after 2100) or an open/high/low/close that does not parse, is NaN, infinite,
   zero or negative is dropped and counted under its reason. Nothing is dropped silently.
3. **Order**: rows are sorted by time (the Binance files are newest first).
4. **Duplicate hours** (overlapping export segments) keep one candle: the most complete one
   (largest base volume: a snapshot taken before the hour closed has less), then the one with a
   millisecond time (the full-precision segment), then the first in the file. Each discarded row
   counts as ``duplicate_hour``; candles whose closes disagree by more than 0.1% are noted.
5. **Bad candles**: with ``F = outlier_factor`` (default 1.5, i.e. a 50% move inside one hour
   that the close does not confirm): an open more than a factor ``F`` away from both the
   previous close and its own close is replaced by the previous close (by the close for the
   first candle); a high above ``F * max(open, close)`` or a low below ``min(open, close) / F``
   is clipped to the body; a high below the body or a low above it is moved to the body. Each
   repair is counted. A close more than a factor ``F`` away from both neighbouring closes, in
   opposite directions (a one-candle spike), is dropped (``close_spike``).
6. **Gaps**: missing hours between consecutive candles are listed in the report (the series is
   not filled: a return across a gap spans the gap).

A file with no usable row raises ``ValueError`` naming the file and why, as does a file that is not
a price CSV at all: larger than :data:`MAX_FILE_BYTES` (refused before anything is read: an hourly
series of a century is under 10 MB), binary (a NUL byte or invalid UTF-8 in its first
:data:`SNIFF_BYTES`), or with a line longer than :data:`MAX_LINE_CHARS` (counted as a
``malformed_row``, never handed to the csv module's field limit). The file is read line by line.
Also read: the freqtrade layout ``date,open_time_ms,open,high,low,close,volume`` (the time is
``open_time_ms``, the date is cross-checked), whose symbol comes from a file name such as
``binance_btcusdt_1h_2018_2023.csv`` (``BTC/USDT``). Live prices (the keeper's feed readings) are
checked with :func:`validate_prices`.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

log = logging.getLogger("dmm.prices")

HOUR = 3600
MIN_TIMESTAMP = 1_230_768_000  # 2009-01-01 UTC: nothing older is crypto market data
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01 UTC
MS_THRESHOLD = 1e11  # a numeric time above this is in milliseconds
US_THRESHOLD = 1e14  # ... and above this in microseconds
HEADER_SEARCH_LINES = 5  # a header is looked for in the first lines (after banners)
DEFAULT_OUTLIER_FACTOR = 1.5
DUPLICATE_CONFLICT = 1e-3  # duplicate candles whose closes differ by more are noted
MAX_FILE_BYTES = 256 * 2**20  # a larger file is refused before it is read
MAX_LINE_CHARS = 4096  # a longer line is a malformed row
SNIFF_BYTES = 64 * 2**10  # bytes checked for binary content
QUOTES = ("usdt", "usdc", "busd", "usd", "eur", "btc")

TIME_COLUMNS = ("unix", "timestamp", "open_time_ms", "time", "t", "date", "datetime")
CLOSE_COLUMNS = ("close", "price")
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %I-%p", "%Y-%m-%d %H:%M", "%Y-%m-%d")

# Reasons, as they appear in a LoadReport.
MALFORMED_ROW = "malformed_row"
BAD_TIMESTAMP = "bad_timestamp"
UNPARSEABLE_PRICE = "unparseable_price"
NAN_PRICE = "nan_price"
INFINITE_PRICE = "infinite_price"
ZERO_PRICE = "zero_price"
NEGATIVE_PRICE = "negative_price"
DUPLICATE_HOUR = "duplicate_hour"
CLOSE_SPIKE = "close_spike"
OFF_HOUR = "off_hour_timestamp"
OPEN_OUTLIER = "open_outlier"
HIGH_OUTLIER = "high_outlier"
LOW_OUTLIER = "low_outlier"
HIGH_BELOW_BODY = "high_below_body"
LOW_ABOVE_BODY = "low_above_body"
BANNER_LINE = "banner_line"
DATE_DISAGREES = "date_disagrees_with_time"
DESCENDING_INPUT = "rows_not_in_ascending_order"
DUPLICATE_CONFLICTS = "duplicate_closes_differ"


@dataclass(frozen=True)
class Gap:
    """Hours missing between two consecutive candles.

    ``first_missing`` is the start (UTC seconds) of the first missing hour.
    """

    first_missing: int
    missing_hours: int


@dataclass(frozen=True)
class LoadReport:
    """What the loader read, fixed and dropped, by reason."""

    source: str
    rows_read: int
    rows_kept: int
    dropped: Mapping[str, int] = field(default_factory=dict)
    repaired: Mapping[str, int] = field(default_factory=dict)
    notes: Mapping[str, int] = field(default_factory=dict)
    gaps: tuple[Gap, ...] = ()

    @property
    def rows_dropped(self) -> int:
        """Rows read but not kept (every reason together)."""
        return sum(self.dropped.values())

    @property
    def missing_hours(self) -> int:
        """Hours missing inside the kept series."""
        return sum(g.missing_hours for g in self.gaps)

    def summary(self) -> str:
        """One line for an operator's log."""

        def fmt(counts: Mapping[str, int]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"

        return (
            f"{self.source}: read {self.rows_read} rows, kept {self.rows_kept}; "
            f"dropped: {fmt(self.dropped)}; repaired: {fmt(self.repaired)}; "
            f"notes: {fmt(self.notes)}; gaps: {len(self.gaps)} ({self.missing_hours} missing hours)"
        )


@dataclass(frozen=True)
class Candles:
    """Hourly candles, oldest first, one per hour, every price finite and positive.

    ``timestamps`` are UTC seconds of each candle's *open* (the close is known one hour later).
    """

    timestamps: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    symbol: str = ""
    has_ohlc: bool = True

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        for name in ("open", "high", "low", "close"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} values, expected {n}")
        if n > 1 and not np.all(np.diff(self.timestamps) > 0):
            raise ValueError("timestamps must be strictly increasing")

    def __len__(self) -> int:
        return len(self.timestamps)

    def log_returns(self) -> FloatArray:
        """``r_t = ln(close_t / close_{t-1})``, ``len(self) - 1`` values."""
        return np.diff(np.log(self.close))

    def tail(self, n: int) -> Candles:
        """The last ``n`` candles."""
        return Candles(
            self.timestamps[-n:],
            self.open[-n:],
            self.high[-n:],
            self.low[-n:],
            self.close[-n:],
            self.symbol,
            self.has_ohlc,
        )


# ---------------------------------------------------------------------------------------------
# Pure helpers


def price_problem(value: float) -> str | None:
    """The reason a price is unusable (``nan_price``, ...), or ``None`` when it is fine."""
    if math.isnan(value):
        return NAN_PRICE
    if math.isinf(value):
        return INFINITE_PRICE
    if value == 0:
        return ZERO_PRICE
    if value < 0:
        return NEGATIVE_PRICE
    return None


def validate_prices(prices: Sequence[float] | FloatArray, name: str = "prices") -> FloatArray:
    """Check live prices; return them as a float64 array or raise ``ValueError`` naming the problem.

    Rejects an empty or non-1-D input and any NaN, infinite, zero or negative value (the message
    gives the first offending index and value, and how many are bad).
    """
    arr = np.asarray(prices, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    checks = (
        (np.isnan(arr), "NaN"),
        (np.isinf(arr), "infinite"),
        (arr == 0, "zero"),
        (arr < 0, "negative"),
    )
    for mask, what in checks:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise ValueError(
                f"{name}[{i}] is {what} ({arr[i]!r}); {int(mask.sum())} {what} value(s) in total"
            )
    return arr


def parse_time(value: str) -> int | None:
    """UTC seconds of a numeric (s, ms or us) or text time; ``None`` when it cannot be read."""
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return parse_date(text)
    if not math.isfinite(number):
        return None
    if abs(number) >= US_THRESHOLD:
        number /= 1e6
    elif abs(number) >= MS_THRESHOLD:
        number /= 1e3
    return math.floor(number)


def parse_date(text: str) -> int | None:
    """UTC seconds of an ISO 8601 or CryptoDataDownload date (naive means UTC)."""
    text = text.strip()
    parsed: datetime | None = None
    for fmt in DATE_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
            break
        except ValueError:
            continue
    if parsed is None:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def find_gaps(timestamps: IntArray, step: int = HOUR) -> tuple[Gap, ...]:
    """Missing steps between consecutive (sorted, unique) timestamps."""
    if len(timestamps) < 2:
        return ()
    d = np.diff(timestamps)
    idx = np.flatnonzero(d > step)
    return tuple(Gap(int(timestamps[i]) + step, int(d[i] // step) - 1) for i in idx)


def repair_candles(
    o: FloatArray, h: FloatArray, lo: FloatArray, c: FloatArray, factor: float
) -> tuple[FloatArray, FloatArray, FloatArray, Counter[str]]:
    """Repair opens, highs and lows inconsistent with the closes (see the module docstring).

    Returns new ``open, high, low`` arrays and the count of each repair. Closes are not changed.
    """
    o, h, lo = o.copy(), h.copy(), lo.copy()
    counts: Counter[str] = Counter()
    prev = np.concatenate(([c[0]], c[:-1]))
    far_prev = (o > factor * prev) | (o < prev / factor)
    far_close = (o > factor * c) | (o < c / factor)
    bad_open = far_close & far_prev
    o[bad_open] = prev[bad_open]
    counts[OPEN_OUTLIER] = int(bad_open.sum())
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    for mask, reason, arr, to in (
        (h > factor * top, HIGH_OUTLIER, h, top),
        (h < top, HIGH_BELOW_BODY, h, top),
        (lo < bottom / factor, LOW_OUTLIER, lo, bottom),
        (lo > bottom, LOW_ABOVE_BODY, lo, bottom),
    ):
        arr[mask] = to[mask]
        counts[reason] = int(mask.sum())
    return o, h, lo, +counts


def close_spikes(c: FloatArray, factor: float) -> npt.NDArray[np.bool_]:
    """Closes more than ``factor`` away from both neighbours, in opposite directions."""
    mask = np.zeros(len(c), dtype=bool)
    if len(c) < 3:
        return mask
    r_in = np.log(c[1:-1] / c[:-2])
    r_out = np.log(c[2:] / c[1:-1])
    lim = math.log(factor)
    mask[1:-1] = (np.abs(r_in) > lim) & (np.abs(r_out) > lim) & (np.sign(r_in) != np.sign(r_out))
    return mask


# ---------------------------------------------------------------------------------------------
# Loading (the only part with I/O)


@dataclass
class _Row:
    time: int
    ohlc: tuple[float, float, float, float]
    volume: float
    ms_time: bool
    order: int


def _read_lines(path: Path) -> list[str]:
    """The file's lines, streamed; refuses (``ValueError``, one line) a file too large to be a
    price series or one that is binary, before reading it into memory."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(
                f"{path}: {size / 2**20:,.0f} MiB is larger than the {MAX_FILE_BYTES // 2**20} MiB "
                "a price file may be; not read"
            )
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
        if b"\x00" in head:
            raise ValueError(f"{path}: binary content (a NUL byte), not a CSV file")
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 4:  # not merely a character cut at the sniff boundary
                raise ValueError(
                    f"{path}: not UTF-8 text (byte {exc.start}), not a CSV file"
                ) from None
        lines = []
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
            for line in handle:
                lines.append(line.rstrip("\r\n"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return lines


def _find_header(lines: list[str], path: Path) -> tuple[int, list[str]]:
    for i, line in enumerate(lines[:HEADER_SEARCH_LINES]):
        if len(line) > MAX_LINE_CHARS:
            continue
        cells = [c.strip().lower() for c in next(csv.reader([line]), [])]
        if any(c in CLOSE_COLUMNS for c in cells) and any(c in TIME_COLUMNS for c in cells):
            return i, cells
    if not any(line.strip() for line in lines):
        raise ValueError(f"{path}: empty file, no price rows")
    raise ValueError(
        f"{path}: no header with a time column ({'/'.join(TIME_COLUMNS)}) and a close column "
        f"({'/'.join(CLOSE_COLUMNS)}) in the first {HEADER_SEARCH_LINES} lines; not a price CSV"
    )


def _columns(cells: list[str]) -> tuple[int, int | None, list[int], int | None]:
    """Indices of the time column, a date column to cross-check, open/high/low/close, volume."""
    col = {name: i for i, name in reversed(list(enumerate(cells)))}
    numeric = [col[c] for c in TIME_COLUMNS if c in col and c not in ("date", "datetime")]
    dates = [col[c] for c in ("date", "datetime") if c in col]
    t_col = numeric[0] if numeric else dates[0]
    date_col = dates[0] if numeric and dates else None
    close_col = next(col[c] for c in CLOSE_COLUMNS if c in col)
    ohlc = [col.get("open", close_col), col.get("high", close_col), col.get("low", close_col)]
    volume_col = next((i for i, c in enumerate(cells) if c.startswith("volume")), None)
    return t_col, date_col, [*ohlc, close_col], volume_col


def _parse_prices(fields: list[str], cols: list[int]) -> tuple[float, ...] | str:
    """The row's open, high, low, close, or the reason one of them is unusable."""
    values: list[float] = []
    for c in cols:
        try:
            v = float(fields[c])
        except ValueError:
            return UNPARSEABLE_PRICE
        problem = price_problem(v)
        if problem:
            return problem
        values.append(v)
    return tuple(values)


def _parse_rows(
    lines: list[str],
    cells: list[str],
    dropped: Counter[str],
    repaired: Counter[str],
    notes: Counter[str],
) -> list[_Row]:
    t_col, date_col, ohlc_cols, volume_col = _columns(cells)
    rows: list[_Row] = []
    short = [line if len(line) <= MAX_LINE_CHARS else "" for line in lines]
    too_long = sum(1 for line in short if not line)
    if too_long:
        dropped[MALFORMED_ROW] += too_long
    for fields in csv.reader(line for line in short if line):
        if len(fields) != len(cells):
            dropped[MALFORMED_ROW] += 1
            continue
        t = parse_time(fields[t_col])
        if t is None or not MIN_TIMESTAMP <= t < MAX_TIMESTAMP:
            dropped[BAD_TIMESTAMP] += 1
            continue
        if date_col is not None and parse_date(fields[date_col]) not in (None, t):
            notes[DATE_DISAGREES] += 1
        prices = _parse_prices(fields, ohlc_cols)
        if isinstance(prices, str):
            dropped[prices] += 1
            continue
        volume = 0.0
        if volume_col is not None:
            with contextlib.suppress(ValueError):
                volume = float(fields[volume_col])
        if t % HOUR:
            repaired[OFF_HOUR] += 1
            t -= t % HOUR
        raw_time = fields[t_col].strip()
        ms_time = raw_time.isdigit() and int(raw_time) >= MS_THRESHOLD
        o, h, lo, c = prices
        rows.append(
            _Row(t, (o, h, lo, c), volume if math.isfinite(volume) else 0.0, ms_time, len(rows))
        )
    return rows


def _dedupe(rows: list[_Row], dropped: Counter[str], notes: Counter[str]) -> list[_Row]:
    descending = sum(a.time > b.time for a, b in pairwise(rows))
    if descending:
        notes[DESCENDING_INPUT] += descending
    best: dict[int, _Row] = {}
    for row in rows:
        kept = best.get(row.time)
        if kept is None:
            best[row.time] = row
            continue
        dropped[DUPLICATE_HOUR] += 1
        if abs(row.ohlc[3] - kept.ohlc[3]) > DUPLICATE_CONFLICT * kept.ohlc[3]:
            notes[DUPLICATE_CONFLICTS] += 1
        if (row.volume, row.ms_time, -row.order) > (kept.volume, kept.ms_time, -kept.order):
            best[row.time] = row
    return [best[t] for t in sorted(best)]


def load_candles(
    path: str | Path, outlier_factor: float = DEFAULT_OUTLIER_FACTOR, symbol: str | None = None
) -> tuple[Candles, LoadReport]:
    """Load and normalise an hourly candle CSV.

    Parameters
    ----------
    path
        CSV file in the CryptoDataDownload layout or ``timestamp,close``.
    outlier_factor
        ``F`` > 1: a price more than this factor away from its reference is an outlier.
    symbol
        Name of the asset; by default the file's ``symbol`` column or the file name.

    Returns
    -------
    Candles, LoadReport
        The clean series and what was dropped, repaired and noted on the way.

    Raises
    ------
    ValueError
        If the file cannot be read, is empty, has no price header, or has no usable row.
    """
    if not outlier_factor > 1:
        raise ValueError(f"outlier_factor must be above 1, got {outlier_factor}")
    path = Path(path)
    lines = _read_lines(path)
    start, cells = _find_header(lines, path)
    dropped: Counter[str] = Counter()
    repaired: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    if start:
        notes[BANNER_LINE] += start
    body = [line for line in lines[start + 1 :] if line.strip()]
    rows = _parse_rows(body, cells, dropped, repaired, notes)
    if not rows:
        reasons = ", ".join(f"{n} {k}" for k, n in sorted(dropped.items())) or "no data rows"
        raise ValueError(f"{path}: no usable price rows ({reasons})")
    if symbol is None:
        symbol = _symbol(body, cells) or symbol_from_name(path.stem)
    rows = _dedupe(rows, dropped, notes)
    t = np.array([r.time for r in rows], dtype=np.int64)
    ohlc = np.array([r.ohlc for r in rows], dtype=np.float64)
    o, h, lo, c = ohlc.T
    has_ohlc = "open" in cells and "high" in cells and "low" in cells
    spikes = close_spikes(c, outlier_factor)
    if spikes.any():
        dropped[CLOSE_SPIKE] += int(spikes.sum())
        keep = ~spikes
        t, o, h, lo, c = t[keep], o[keep], h[keep], lo[keep], c[keep]
    if has_ohlc:
        o, h, lo, fixes = repair_candles(o, h, lo, c, outlier_factor)
        repaired.update(fixes)
    candles = Candles(t, o, h, lo, c.copy(), symbol, has_ohlc)
    report = LoadReport(
        source=str(path),
        rows_read=len(body),
        rows_kept=len(candles),
        dropped=dict(+dropped),
        repaired=dict(+repaired),
        notes=dict(+notes),
        gaps=find_gaps(t),
    )
    _log_report(report)
    return candles, report


def _symbol(body: list[str], cells: list[str]) -> str | None:
    if "symbol" not in cells or not body or len(body[0]) > MAX_LINE_CHARS:
        return None
    fields = next(csv.reader([body[0]]), [])
    i = cells.index("symbol")
    return fields[i].strip() if i < len(fields) and fields[i].strip() else None


def symbol_from_name(stem: str) -> str:
    """``binance_btcusdt_1h_2018_2023`` -> ``BTC/USDT``; the stem itself when no pair is found.

    >>> symbol_from_name("binance_solusdt_1h_2020_2023")
    'SOL/USDT'
    """
    for part in stem.lower().replace("-", "_").split("_"):
        for quote in QUOTES:
            if part.endswith(quote) and len(part) > len(quote) and part.isalnum():
                return f"{part[: -len(quote)].upper()}/{quote.upper()}"
    return stem


def _log_report(report: LoadReport) -> None:
    if report.dropped or report.repaired or report.gaps:
        log.warning("%s", report.summary())
    else:
        log.info("%s", report.summary())
    for gap in report.gaps[:20]:
        log.info(
            "%s: %d missing hour(s) from %s",
            report.source,
            gap.missing_hours,
            datetime.fromtimestamp(gap.first_missing, UTC).isoformat(),
        )


__all__ = [
    "Candles",
    "FloatArray",
    "Gap",
    "IntArray",
    "LoadReport",
    "close_spikes",
    "find_gaps",
    "load_candles",
    "parse_date",
    "parse_time",
    "price_problem",
    "repair_candles",
    "symbol_from_name",
    "validate_prices",
]
