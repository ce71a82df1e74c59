"""The candle loader against crafted bad files: every drop, repair and note is counted."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from offchain.risk.prices import (
    Gap,
    find_gaps,
    load_candles,
    parse_time,
    price_problem,
    validate_prices,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HEADER = "unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount"
T0 = 1_600_000_000 // 3600 * 3600  # 2020-09-13 12:00 UTC
H = 3600


def row(
    t: int,
    o: float | str,
    h: float | str,
    lo: float | str,
    c: float | str,
    volume: float = 10.0,
    unit: str = "ms",
    date: str | None = None,
) -> str:
    """One CryptoDataDownload line; ``unit`` is how the ``unix`` column writes ``t``."""
    unix = {"ms": str(t * 1000), "s": f"{t}.0", "us": str(t * 1_000_000), "int": str(t)}[unit]
    date = date or datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{unix},{date},BTC/USDT,{o},{h},{lo},{c},{volume},{volume * 100},42"


def walk(n: int, start: int = T0) -> list[tuple[int, float, float, float, float]]:
    """``n`` consistent hourly candles ``(t, open, high, low, close)`` drifting up 0.1% an hour."""
    out = []
    close = 100.0
    for i in range(n):
        o, close = close, round(close * (1.001 if i % 3 else 0.9995), 6)
        out.append((start + i * H, o, max(o, close) * 1.002, min(o, close) * 0.998, close))
    return out


def write(tmp_path: Path, lines: list[str], name: str = "prices.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Clean input


def test_load_candles__binance_layout_newest_first(tmp_path):
    candles_in = walk(30)
    path = write(tmp_path, [HEADER] + [row(*c) for c in reversed(candles_in)])
    candles, report = load_candles(path)
    assert candles.symbol == "BTC/USDT" and candles.has_ohlc
    np.testing.assert_array_equal(candles.timestamps, [c[0] for c in candles_in])
    np.testing.assert_array_equal(candles.close, [c[4] for c in candles_in])
    np.testing.assert_array_equal(candles.open, [c[1] for c in candles_in])
    assert (report.rows_read, report.rows_kept, report.rows_dropped) == (30, 30, 0)
    assert report.dropped == {} and report.repaired == {} and report.gaps == ()
    assert report.notes == {"rows_not_in_ascending_order": 29}


def test_load_candles__plain_timestamp_close_layout(tmp_path):
    lines = ["timestamp,price"]
    lines += [f"{T0 + i * H},{100 + i}" for i in range(3)]
    lines += ["2020-09-13T15:00:00Z,103", "2020-09-13 16:00:00,104"]
    candles, report = load_candles(write(tmp_path, lines, "plain.csv"))
    assert not candles.has_ohlc
    assert candles.symbol == "plain"
    np.testing.assert_array_equal(candles.timestamps, T0 + H * np.arange(5))
    np.testing.assert_array_equal(candles.close, [100, 101, 102, 103, 104])
    np.testing.assert_array_equal(candles.open, candles.close)
    assert report.rows_kept == 5 and report.dropped == {}


def test_load_candles__banner_line_before_the_header(tmp_path):
    lines = ["https://www.CryptoDataDownload.com", HEADER] + [row(*c) for c in walk(5)]
    candles, report = load_candles(write(tmp_path, lines))
    assert len(candles) == 5
    assert report.notes == {"banner_line": 1}


# ---------------------------------------------------------------------------------------------
# Rows dropped, by reason


def test_load_candles__bad_prices_are_dropped_by_reason(tmp_path):
    rows = walk(20)
    lines = [HEADER]
    bad = {
        3: {"c": "nan"},
        5: {"c": "inf"},
        7: {"c": "0"},
        9: {"o": "-5"},
        11: {"h": "abc"},
        13: {"lo": "-inf"},
        15: {"c": "NaN"},
    }
    for i, (t, o, h, lo, c) in enumerate(rows):
        values = {"o": o, "h": h, "lo": lo, "c": c} | bad.get(i, {})
        lines.append(row(t, **values))
    candles, report = load_candles(write(tmp_path, lines))
    assert report.dropped == {
        "nan_price": 2,
        "infinite_price": 2,
        "zero_price": 1,
        "negative_price": 1,
        "unparseable_price": 1,
    }
    assert (report.rows_read, report.rows_kept, report.rows_dropped) == (20, 13, 7)
    assert np.all(np.isfinite(candles.close)) and np.all(candles.close > 0)
    # each dropped hour leaves a one-hour gap, listed in the report
    assert report.gaps == tuple(Gap(T0 + i * H, 1) for i in sorted(bad))
    assert report.missing_hours == 7


def test_load_candles__malformed_rows_and_unreadable_times(tmp_path):
    rows = walk(10)
    lines = [HEADER] + [row(*c) for c in rows]
    lines[2] = lines[2].rsplit(",", 1)[0]  # a field short
    lines[4] = lines[4] + ",extra"  # a field too many
    lines[6] = "yesterday" + lines[6][lines[6].index(",") :]  # not a time
    lines[8] = str(631_152_000_000) + lines[8][lines[8].index(",") :]  # 1990: implausible
    candles, report = load_candles(write(tmp_path, lines))
    assert report.dropped == {"malformed_row": 2, "bad_timestamp": 2}
    assert report.rows_kept == len(candles) == 6


def test_load_candles__duplicate_hours_keep_the_most_complete_candle(tmp_path):
    rows = walk(6)
    t, o, h, lo, c = rows[2]
    lines = [HEADER] + [row(*x) for x in rows]
    # an earlier snapshot of hour 2: less volume, a close 1% off
    lines.append(row(t, o, h * 1.02, lo, c * 1.01, volume=3.0))
    # hour 4 twice with equal volume: the millisecond row wins over the seconds row
    t4, o4, h4, lo4, c4 = rows[4]
    lines[5] = row(t4, o4, h4, lo4, c4, unit="s")
    lines.append(row(t4, o4, h4 * 1.0005, lo4, c4 * 1.0002, unit="ms"))
    candles, report = load_candles(write(tmp_path, lines))
    assert report.dropped == {"duplicate_hour": 2}
    # only hour 2's closes differ by more than 0.1%; the appended rows step back in time once
    assert report.notes == {"duplicate_closes_differ": 1, "rows_not_in_ascending_order": 1}
    assert len(candles) == 6
    assert candles.close[2] == c
    assert candles.close[4] == pytest.approx(c4 * 1.0002)


def test_load_candles__mixed_time_units_on_one_hourly_grid(tmp_path):
    units = ["ms", "s", "int", "us", "ms", "s"]
    lines = [HEADER] + [row(*x, unit=u) for x, u in zip(walk(6), units, strict=True)]
    candles, report = load_candles(write(tmp_path, lines))
    np.testing.assert_array_equal(candles.timestamps, T0 + H * np.arange(6))
    assert report.dropped == {} and report.gaps == ()


def test_load_candles__off_hour_time_is_moved_to_its_hour(tmp_path):
    rows = walk(4)
    lines = [HEADER] + [row(*x) for x in rows]
    t, o, h, lo, c = rows[1]
    lines[2] = row(t + 125, o, h, lo, c, date=datetime.fromtimestamp(t, UTC).isoformat())
    candles, report = load_candles(write(tmp_path, lines))
    np.testing.assert_array_equal(candles.timestamps, T0 + H * np.arange(4))
    assert report.repaired == {"off_hour_timestamp": 1}
    assert report.notes == {"date_disagrees_with_time": 1}


def test_load_candles__date_column_that_disagrees_is_noted_and_time_wins(tmp_path):
    rows = walk(3)
    lines = [HEADER] + [row(*x) for x in rows]
    lines[3] = row(*rows[2], date="2020-09-13 10:00:00")  # four hours behind
    candles, report = load_candles(write(tmp_path, lines))
    assert candles.timestamps[-1] == rows[2][0]
    assert report.notes == {"date_disagrees_with_time": 1}


def test_load_candles__outlier_candles_are_repaired_and_a_spike_dropped(tmp_path):
    rows = [list(x) for x in walk(20)]
    rows[5][2] = rows[5][4] * 10  # high 10x the body
    rows[8][3] = rows[8][4] / 10  # low a tenth of the body
    good_open = rows[11][1]
    rows[11][1] = good_open * 3  # open 3x away from the previous and its own close
    spike = rows[14][4] * 3
    rows[14][2] = rows[14][4] = spike  # one close 3x its neighbours
    rows[17][2] = min(rows[17][1], rows[17][4]) * 0.999  # high below the body
    rows[18][3] = max(rows[18][1], rows[18][4]) * 1.001  # low above the body
    candles, report = load_candles(write(tmp_path, [HEADER] + [row(*x) for x in rows]))
    assert report.dropped == {"close_spike": 1}
    assert report.repaired == {
        "high_outlier": 1,
        "low_outlier": 1,
        "open_outlier": 1,
        "high_below_body": 1,
        "low_above_body": 1,
    }
    assert report.gaps == (Gap(rows[14][0], 1),)
    assert spike not in candles.close
    i = {int(t): k for k, t in enumerate(candles.timestamps)}
    k5, k8, k11 = i[rows[5][0]], i[rows[8][0]], i[rows[8][0] + 3 * H]
    assert candles.high[k5] == max(rows[5][1], rows[5][4])
    assert candles.low[k8] == min(rows[8][1], rows[8][4])
    assert candles.open[k11] == candles.close[k11 - 1] == good_open
    k17, k18 = i[rows[17][0]], i[rows[18][0]]
    assert candles.high[k17] == max(candles.open[k17], candles.close[k17])
    assert candles.low[k18] == min(candles.open[k18], candles.close[k18])
    assert np.all(candles.low <= np.minimum(candles.open, candles.close))
    assert np.all(candles.high >= np.maximum(candles.open, candles.close))


def test_load_candles__gaps_are_listed_not_filled(tmp_path):
    rows = walk(12)
    kept = [x for i, x in enumerate(rows) if i not in (5, 6, 7, 10)]
    candles, report = load_candles(write(tmp_path, [HEADER] + [row(*x) for x in kept]))
    assert len(candles) == 8
    assert report.gaps == (Gap(T0 + 5 * H, 3), Gap(T0 + 10 * H, 1))
    assert report.missing_hours == 4
    assert "gaps: 2 (4 missing hours)" in report.summary()
    # a return across a gap spans it
    assert len(candles.log_returns()) == 7


# ---------------------------------------------------------------------------------------------
# Files with nothing to use


def test_load_candles__no_usable_row_names_the_file_and_the_reasons(tmp_path):
    t = [x[0] for x in walk(3)]
    lines = [HEADER, row(t[0], 1, 1, 1, "nan"), row(t[1], 1, 1, 1, 0), row(t[2], 1, 1, 1, "nan")]
    path = write(tmp_path, lines, "all_bad.csv")
    with pytest.raises(ValueError, match=r"all_bad\.csv: no usable price rows") as exc:
        load_candles(path)
    assert "2 nan_price, 1 zero_price" in str(exc.value)


def test_load_candles__header_without_rows(tmp_path):
    with pytest.raises(ValueError, match=r"header_only\.csv: no usable price rows \(no data rows"):
        load_candles(write(tmp_path, [HEADER, "", "  "], "header_only.csv"))


def test_load_candles__empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.csv: empty file"):
        load_candles(path)


def test_load_candles__not_a_price_file(tmp_path):
    with pytest.raises(ValueError, match=r"other\.csv: no header with a time column"):
        load_candles(write(tmp_path, ["name,age", "alice,30"], "other.csv"))


def test_load_candles__missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"missing\.csv: cannot be read"):
        load_candles(tmp_path / "missing.csv")


def test_load_candles__rejects_an_outlier_factor_of_one_or_less(tmp_path):
    with pytest.raises(ValueError, match="outlier_factor"):
        load_candles(write(tmp_path, [HEADER, row(*walk(1)[0])]), outlier_factor=1.0)


# ---------------------------------------------------------------------------------------------
# Helpers and the real files


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1600000000", 1_600_000_000),
        ("1600000000.0", 1_600_000_000),
        ("1600000000999", 1_600_000_000),  # ms
        ("1600000000000000", 1_600_000_000),  # us
        ("2020-09-13T12:26:40Z", 1_600_000_000),
        ("2020-09-13 14:26:40+02:00", 1_600_000_000),
        ("2020-09-13 12:26:40", 1_600_000_000),  # naive is UTC
        ("2017-08-17 06-AM", 1_502_949_600),  # CryptoDataDownload's old format
        ("2017-08-17 06-PM", 1_502_992_800),
        ("", None),
        ("nan", None),
        ("yesterday", None),
    ],
)
def test_parse_time__units_and_formats(text, expected):
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (math.nan, "nan_price"),
        (math.inf, "infinite_price"),
        (-math.inf, "infinite_price"),
        (0.0, "zero_price"),
        (-1.0, "negative_price"),
        (1e-9, None),
    ],
)
def test_price_problem__reasons(value, reason):
    assert price_problem(value) == reason


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ([1.0, math.nan, 2.0], r"feed\[1\] is NaN"),
        ([1.0, 2.0, math.inf, math.inf], r"feed\[2\] is infinite .*2 infinite value"),
        ([0.0], r"feed\[0\] is zero"),
        ([3.0, -3.0], r"feed\[1\] is negative"),
        ([], "feed is empty"),
        ([[1.0, 2.0]], "one-dimensional"),
    ],
)
def test_validate_prices__rejects_unusable_live_prices(prices, message):
    with pytest.raises(ValueError, match=message):
        validate_prices(prices, "feed")


def test_validate_prices__returns_float_array():
    out = validate_prices([1, 2.5])
    assert out.dtype == np.float64 and list(out) == [1.0, 2.5]


def test_find_gaps__on_sorted_timestamps():
    t = np.array([0, 3600, 3 * 3600, 7 * 3600], dtype=np.int64)
    assert find_gaps(t) == (Gap(7200, 1), Gap(4 * 3600, 3))
    assert find_gaps(t[:1]) == ()


def test_load_candles__real_btc_file_report():
    candles, report = load_candles(DATA / "binance_btcusdt_1h.csv")
    assert (report.rows_read, report.rows_kept) == (36_062, 33_413)
    assert report.dropped == {"duplicate_hour": 2_649}
    assert report.repaired == {"high_outlier": 1, "open_outlier": 1}
    assert report.notes["rows_not_in_ascending_order"] == 33_412
    assert (len(report.gaps), report.missing_hours) == (8, 16)
    assert np.all(np.diff(candles.timestamps) >= H) and np.all(candles.timestamps % H == 0)
    # the first BTC row's high of 16,199.91 at a price near 4,300 is clipped to its body
    assert candles.high.max() < 65_000
    assert candles.high[0] == max(candles.open[0], candles.close[0])


# ---------------------------------------------------------------------------------------------
# Files that are not price series at all, and the freqtrade layout


def test_load_candles__refuses_a_2_gb_file_without_reading_it(tmp_path):
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as handle:  # sparse: 2 GB on paper, nothing on disk
        handle.write((HEADER + "\n").encode())
        handle.truncate(2 * 2**30)
    with pytest.raises(ValueError, match=r"huge.csv: 2,048 MiB is larger than the 256 MiB") as err:
        load_candles(huge)
    assert "\n" not in str(err.value)


def test_load_candles__refuses_a_binary_file(tmp_path):
    binary = tmp_path / "prices.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="binary content"):
        load_candles(binary)
    latin = tmp_path / "latin.csv"
    latin.write_bytes((HEADER + "\n").encode() + b"\xff\xfe\xfa" * 100 + b"\n")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        load_candles(latin)


def test_load_candles__a_line_beyond_the_csv_field_limit_is_a_malformed_row(tmp_path):
    lines = [HEADER] + [row(t, o, h, lo, c) for t, o, h, lo, c in walk(30)]
    lines.insert(5, "1," + "9" * 300_000)  # longer than csv's 131,072-character field limit
    candles, report = load_candles(write(tmp_path, lines))
    assert len(candles) == 30
    assert report.dropped == {"malformed_row": 1}


def test_load_candles__nan_and_infinity_cells_dropped_and_counted(tmp_path):
    rows = walk(10)
    lines = [HEADER] + [row(t, o, h, lo, c) for t, o, h, lo, c in rows]
    t, o, h, lo, c = rows[3]
    lines[4] = row(t, o, h, lo, "NaN")
    t, o, h, lo, c = rows[6]
    lines[7] = row(t, o, "Infinity", lo, c)
    candles, report = load_candles(write(tmp_path, lines))
    assert len(candles) == 8
    assert report.dropped == {"nan_price": 1, "infinite_price": 1}


def test_load_candles__freqtrade_layout_and_its_symbol_from_the_file_name(tmp_path):
    lines = ["date,open_time_ms,open,high,low,close,volume"]
    for t, o, h, lo, c in walk(5):
        day = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{day},{t * 1000},{o},{h},{lo},{c},12.5")
    candles, report = load_candles(write(tmp_path, lines, "binance_solusdt_1h_2020_2023.csv"))
    assert candles.symbol == "SOL/USDT"
    assert candles.timestamps.tolist() == [T0 + i * H for i in range(5)]
    assert candles.has_ohlc and report.notes == {}


@pytest.mark.skipif(not (DATA / "binance_btcusdt_1h_2018_2023.csv").exists(), reason="no data")
def test_load_candles__the_shared_2018_2023_files():
    for name, symbol, first in (
        ("binance_btcusdt_1h_2018_2023.csv", "BTC/USDT", "2018-01-01"),
        ("binance_solusdt_1h_2020_2023.csv", "SOL/USDT", "2020-08-11"),
    ):
        candles, report = load_candles(DATA / name)
        assert candles.symbol == symbol
        assert datetime.fromtimestamp(int(candles.timestamps[0]), UTC).strftime("%Y-%m-%d") == first
        assert report.rows_dropped == 0 and report.gaps  # exchange maintenance hours are absent
