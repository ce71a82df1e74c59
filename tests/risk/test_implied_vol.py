"""The volatility index: both DVOL layouts, no look-ahead, gaps fall back to history."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from offchain.risk.implied_vol import align_to_candles, hourly_volatility, load_vol_index
from offchain.risk.prices import Candles

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
T0 = 1_640_995_200  # 2022-01-01 00:00 UTC


def candles(start: int, n: int) -> Candles:
    t = start + 3600 * np.arange(n, dtype=np.int64)
    c = np.full(n, 100.0)
    return Candles(t, c, c, c, c)


def test_hourly_file__known_at_the_end_of_its_hour(tmp_path):
    path = tmp_path / "dvol_1h.csv"
    lines = ["timestamp,datetime_utc,date,hour,dvol_open,dvol_high,dvol_low,dvol_close"]
    for i, v in enumerate([80.0, 81.0, 82.0]):
        lines.append(f"{(T0 + 3600 * i) * 1000},x,x,{i},1,1,1,{v}")
    path.write_text("\n".join(lines) + "\n")
    index = load_vol_index(path)
    assert index.period == 3600 and index.values.tolist() == [80.0, 81.0, 82.0]
    # candle 0 closes at T0 + 3600, when the index hour 0 has closed too: 80
    out = align_to_candles(index, candles(T0 - 3600, 5))
    assert math.isnan(out[0])  # closes at T0: no index hour has closed yet
    assert out[1:].tolist() == [80.0, 81.0, 82.0, 82.0]


def test_daily_file__newest_first_known_at_the_end_of_the_day(tmp_path):
    path = tmp_path / "dvol_1d.csv"
    path.write_text(
        "date,symbol,open,high,low,close\n2022-01-02,ETH,1,1,1,90\n2022-01-01,ETH,1,1,1,95\n"
    )
    index = load_vol_index(path)
    assert index.period == 86_400 and index.values.tolist() == [95.0, 90.0]
    out = align_to_candles(index, candles(T0, 72))
    assert np.isnan(out[:23]).all()  # 2022-01-01 is known only at its end
    assert out[23] == 95.0 and out[47] == 90.0
    assert out[-1] == 90.0  # within two days


def test_align__a_stale_index_falls_back_to_nan(tmp_path):
    path = tmp_path / "dvol_1h.csv"
    path.write_text(
        "timestamp,datetime_utc,date,hour,dvol_open,dvol_high,dvol_low,dvol_close\n"
        f"{T0 * 1000},x,x,0,1,1,1,70\n"
    )
    out = align_to_candles(load_vol_index(path), candles(T0, 30))
    assert out[0] == 70.0 and out[23] == 70.0 and np.isnan(out[25:]).all()


def test_load_vol_index__wrong_files_are_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"bad\.csv: expected dvol_close"):
        load_vol_index(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("date,close\n2022-01-01,nan\n")
    with pytest.raises(ValueError, match="no usable index value"):
        load_vol_index(empty)


def test_hourly_volatility__annual_percent_to_one_hour():
    assert hourly_volatility(np.array([87.6]))[0] == pytest.approx(0.876 / math.sqrt(8760))


@pytest.mark.skipif(not (DATA / "deribit_btc_dvol_1h_2021_2023.csv").exists(), reason="no data")
def test_shared_files__btc_hourly_and_eth_daily_from_2021_03_24():
    btc = load_vol_index(DATA / "deribit_btc_dvol_1h_2021_2023.csv")
    eth = load_vol_index(DATA / "deribit_eth_dvol_1d_2021_2023.csv")
    assert (btc.period, eth.period) == (3600, 86_400)
    assert btc.starts[0] == 1_616_544_000 and btc.values.min() > 30 and btc.values.max() < 250
    assert np.all(np.diff(eth.starts) == 86_400)  # no missing day
