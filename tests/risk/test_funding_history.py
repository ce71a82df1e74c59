"""Settlement files (every bad row: one line naming file and line), the reference-mode replay
by hand, the bound rule, and the study script's exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from offchain import WAD
from offchain.risk.funding_history import (
    CALIBRATION_END,
    FundingDataError,
    FundingHistory,
    choose_max_funding_rate,
    clip_stats,
    load_funding_history,
    replay_reference,
    settlement_intervals,
    tracking_stats,
)
from offchain.risk.funding_study import CHOSEN_MAX_FUNDING_RATE

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
HEADER = "datetime,timestamp,open,high,low,close,funding_rate"
H = 3600
T0 = 1_600_000_000 // (8 * H) * (8 * H)  # a settlement time (multiple of 8 hours)


def row(t: float, rate: str | float) -> str:
    return f"2020-09-13 00:00:00.000,{t},1,1,1,1,{rate}"


def write(tmp_path: Path, *lines: str, header: str = HEADER) -> Path:
    path = tmp_path / "binance_xyzusdt_funding_8h_2020.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def history(rates: list[float], times: list[int] | None = None) -> FundingHistory:
    t = np.array(times or [T0 + 8 * H * k for k in range(len(rates))], dtype=np.int64)
    return FundingHistory("X", t, np.array(rates, dtype=np.float64), settlement_intervals(t))


# ---------------------------------------------------------------------------------------------
# Reading


def test_load__sorts_rounds_jitter_and_keeps_repeats_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        row(T0 + 8 * H + 0.004, "0.0002"),
        row(T0 - 0.001, "0.0001"),
        row(T0 - 0.001, "0.0001"),
        row((T0 + 16 * H) * 1000, "-0.0003"),  # milliseconds
    )
    h = load_funding_history(path)
    assert h.symbol == "XYZUSDT"
    assert h.times.tolist() == [T0, T0 + 8 * H, T0 + 16 * H]
    assert h.rates.tolist() == [0.0001, 0.0002, -0.0003]
    assert h.intervals.tolist() == [8 * H] * 3


def test_settlement_intervals__short_intervals_kept_and_holes_are_8_hours() -> None:
    t = np.array([0, 8 * H, 10 * H, 14 * H, 14 * H + 15 * 86_400])
    assert settlement_intervals(t).tolist() == [8 * H, 8 * H, 2 * H, 4 * H, 8 * H]


@pytest.mark.parametrize(
    ("lines", "header", "match"),
    [
        ([row(T0, "0.0001")], "datetime,timestamp,rate", "no funding_rate column"),
        ([row(T0, "0.0001")], "datetime,time,funding_rate", "no timestamp column"),
        (["2020-09-13,1600000000,1,1"], HEADER, r":2: 4 fields, the header has 7"),
        ([row(T0, "0.0001"), row("soon", "0.0001")], HEADER, r":3: timestamp 'soon' is not"),
        ([row("inf", "0.0001")], HEADER, "not finite"),
        ([row(100, "0.0001")], HEADER, "not between 2009 and 2100"),
        ([row(T0, "abc")], HEADER, r":2: funding_rate 'abc' is not a number"),
        ([row(T0, "nan")], HEADER, r"funding_rate 'nan' is not finite"),
        ([row(T0, "0.5")], HEADER, r"beyond \+-10%"),
        ([row(T0, "0.0001"), row(T0, "0.0002")], HEADER, r":3: settlement at .* another rate"),
        ([], HEADER, "no settlement rows"),
    ],
)
def test_load__bad_input_is_one_line_naming_file_and_line(
    tmp_path: Path, lines: list[str], header: str, match: str
) -> None:
    path = write(tmp_path, *lines, header=header)
    with pytest.raises(FundingDataError, match=match) as info:
        load_funding_history(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_load__missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(FundingDataError, match="cannot read"):
        load_funding_history(tmp_path / "absent.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(FundingDataError, match="empty file"):
        load_funding_history(tmp_path / "empty.csv")


# ---------------------------------------------------------------------------------------------
# The bound


def test_clip_stats__by_hand() -> None:
    # 8-hour settlements of 0.1%, 0.4% and -0.6% against a bound of 0.3% per 8 hours.
    h = history([0.001, 0.004, -0.006])
    c = clip_stats(h, 0.003 / (8 * H))
    assert (c.settlements, c.clipped) == (3, 2)
    assert c.max_excess_8h == pytest.approx(0.003)
    assert c.mean_excess_8h == pytest.approx(0.002)
    assert c.share_cut == pytest.approx(0.004 / 0.011)
    assert c.clipped_fraction == pytest.approx(2 / 3)


def test_clip_stats__a_2_hour_settlement_is_four_times_the_8_hour_rate() -> None:
    h = history([0.001, 0.001], times=[T0, T0 + 2 * H])  # the second covers 2 hours
    c = clip_stats(h, 0.002 / (8 * H))
    assert c.clipped == 1 and c.max_excess_8h == pytest.approx(0.002)


def test_choose_max_funding_rate__percentile_of_calibration_rounded_up_to_the_grid() -> None:
    before = history([0.0001] * 9 + [-0.0029], times=[T0 + 8 * H * k for k in range(10)])
    after = history([0.02], times=[CALIBRATION_END + 8 * H])  # after 2021: ignored
    # max |rate| = 0.0029 / 28800 per second = 1.0069e-7 -> rounded up to 1.1e-7 (1.1e11 WAD).
    assert choose_max_funding_rate([before, after], percentile=100) == 110_000_000_000
    # the 90th percentile of ten values is the 9th smallest: 0.0001 / 28800 -> 1e-8.
    assert choose_max_funding_rate([before], percentile=90) == 10_000_000_000
    with pytest.raises(ValueError, match="percentile"):
        choose_max_funding_rate([before], percentile=0)
    with pytest.raises(ValueError, match="no settlement"):
        choose_max_funding_rate([after])


def test_choose_max_funding_rate__frozen_value_follows_from_the_shared_data() -> None:
    histories = [
        load_funding_history(DATA / f"binance_{a}usdt_funding_8h_{y}.csv")
        for a, y in (("btc", "2019_2023"), ("eth", "2019_2023"), ("sol", "2020_2023"))
    ]
    assert choose_max_funding_rate(histories) == CHOSEN_MAX_FUNDING_RATE


# ---------------------------------------------------------------------------------------------
# Reference-mode replay


def test_replay__the_engine_charges_the_last_published_rate() -> None:
    h = history([0.0001, 0.0003, -0.0002])  # settled at T0, T0 + 8 h, T0 + 16 h
    r = replay_reference(h, bound=10**12)
    assert r.ticks[0] == T0 and r.ticks[-1] == T0 + 16 * H
    per_s = [0.0001 / (8 * H), 0.0003 / (8 * H), -0.0002 / (8 * H)]
    assert r.rate_at(np.array([T0, T0 + 8 * H - 1, T0 + 8 * H, T0 + 16 * H])) == pytest.approx(
        [per_s[0], per_s[0], per_s[1], per_s[2]], rel=1e-6
    )
    # Each interval is charged at the rate published at its start: (T0, T0 + 8 h] at the T0
    # settlement, (T0 + 8 h, T0 + 16 h] at the T0 + 8 h one.
    assert r.charged[1] == pytest.approx(0.0001, rel=1e-6)
    assert r.charged[2] == pytest.approx(0.0003, rel=1e-6)
    assert r.funding_between(np.array([T0 + 4 * H]), np.array([T0 + 12 * H]))[0] == pytest.approx(
        0.00005 + 0.00015, rel=1e-6
    )
    t = tracking_stats(r, None, None)
    assert t.intervals == 2
    assert t.settled_total == pytest.approx(0.0001)
    assert t.charged_total == pytest.approx(0.0004, rel=1e-6)
    assert t.mean_abs_error_8h == pytest.approx((0.0002 + 0.0005) / 2, rel=1e-6)


def test_replay__clips_at_the_bound_and_decays_over_a_hole() -> None:
    times = [T0, T0 + 8 * H, T0 + 48 * H]  # no publication for 40 hours
    r = replay_reference(history([0.0001, 0.006, 0.0001], times), bound=10**11)
    bound_per_s = 10**11 / WAD
    at = r.ticks.tolist().index
    assert r.rate[at(T0 + 8 * H)] == pytest.approx(bound_per_s)
    assert r.clipped[at(T0 + 8 * H)]
    # stale after 9 h, then linear to zero over 8 h: at 13 h half the (unclipped) 0.6%/8h.
    half = 0.003 / (8 * H)
    assert r.stale[at(T0 + 21 * H)]
    assert r.rate[at(T0 + 21 * H)] == pytest.approx(min(half, bound_per_s), rel=1e-6)
    assert r.rate[at(T0 + 25 * H)] == 0.0
    t = tracking_stats(r, None, None)
    assert t.stale_ticks == 30 and t.clipped_ticks > 0


def test_replay__refuses_an_empty_history() -> None:
    with pytest.raises(ValueError, match="no settlements"):
        replay_reference(history([]), bound=10**12)


# ---------------------------------------------------------------------------------------------
# The study script's edges


def test_script__malformed_row_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    bad = write(tmp_path, row(T0, "0.0001"), row(T0 + 8 * H, "oops"))
    prices = DATA / "binance_btcusdt_1h_2018_2023.csv"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "funding_study.py"), "--market", str(bad),
         str(prices), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: {bad}:3: funding_rate 'oops' is not a number"]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_script__missing_file_exit_code_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "funding_study.py"), "--market",
         str(tmp_path / "a.csv"), str(tmp_path / "b.csv")],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "no such file" in proc.stderr and "Traceback" not in proc.stderr
