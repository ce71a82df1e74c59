"""``dmm risk`` and ``dmm backtest`` through click's CliRunner on small price files."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from offchain import WAD
from offchain.cli import main
from offchain.risk.risk_config import load_risk_config
from tests.spec_keys import BACKTEST_MODEL_KEYS

T0 = 1_600_000_000 // 3600 * 3600


def write_prices(path: Path, n: int, seed: int = 3) -> Path:
    """A CryptoDataDownload-style file of ``n`` fat-tailed hourly candles, newest first."""
    rng = np.random.default_rng(seed)
    vol = np.where((np.arange(n) // 200) % 2 == 0, 0.005, 0.012)
    close = 20_000 * np.exp(np.cumsum(vol * rng.standard_t(4, n) / math.sqrt(2)))
    lines = ["unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount"]
    for i in reversed(range(n)):
        t = T0 + 3600 * i
        o = close[i - 1] if i else close[0]
        c = close[i]
        date = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"{t * 1000},{date},BTC/USDT,{o:.2f},{max(o, c) * 1.001:.2f},"
            f"{min(o, c) * 0.999:.2f},{c:.2f},12.5,250000.0,900"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def prices(tmp_path_factory) -> Path:
    return write_prices(tmp_path_factory.mktemp("cli") / "btc_small.csv", 1500)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_risk__prints_what_the_keeper_would_sign(prices, caplog):
    result = CliRunner(mix_stderr=False).invoke(
        main, ["risk", "--prices", str(prices), "--market-id", "3"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "BTC/USDT: 1500 hourly prices" in out
    assert "market         BTC (id 3)" in out
    assert re.search(r"model_hash     0x[0-9a-f]{64}\n", out)
    assert "decision       push: first update" in out
    m = re.search(
        r"RiskUpdate     market_id=3 multiplier=(\d+) funding_rate=0 observed_at=(\d+)", out
    )
    assert m is not None
    assert int(m.group(2)) == T0 + 1500 * 3600  # the close of the last candle
    multiplier = int(m.group(1))
    g = load_risk_config().market("BTC").guardrails
    assert g.min_multiplier <= multiplier <= g.max_multiplier  # the shipped BTC band
    rate = float(re.search(r"-> proposed ([0-9.]+)%", out).group(1)) / 100
    tier0 = load_risk_config().market("BTC").tier0_rate
    assert multiplier / WAD == pytest.approx(rate / tier0, rel=1e-4)
    assert "worst 1h for longs #1" in out and "shock -30.0%" in out
    # the loader's report is logged once (stderr), not echoed again
    reports = [r for r in caplog.records if "read 1500 rows, kept 1500" in r.getMessage()]
    assert len(reports) == 1 and "read 1500 rows" not in out  # stdout is data only


def test_risk__current_multiplier_is_clamped_to_the_step_limits(runner, prices):
    result = runner.invoke(main, ["risk", "--prices", str(prices), "--current", "2.0"])
    assert result.exit_code == 0, result.output
    m = re.search(r"multiplier     ([0-9.]+)x \(\d+ wei\) -> clamped ([0-9.]+)x", result.output)
    assert m is not None
    proposed, clamped = float(m.group(1)), float(m.group(2))
    g = load_risk_config().market("BTC").guardrails
    up, down = 2 * (1 + g.max_increase / WAD), 2 * (1 - g.max_decrease / WAD)
    lo, hi = g.min_multiplier / WAD, g.max_multiplier / WAD
    assert clamped == pytest.approx(min(max(proposed, down, lo), up, hi), abs=1e-6)
    assert "decision       push: refresh: last update 3600 s ago" in result.output


def test_risk__bad_file_is_a_clean_error(runner, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("unix,close\n1600000000,nan\n1600003600,-1\n")
    result = runner.invoke(main, ["risk", "--prices", str(bad), "--market", "BTC"])
    assert result.exit_code == 1
    assert "Error: " in result.output and "bad.csv: no usable price rows" in result.output
    assert "1 nan_price, 1 negative_price" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_risk__too_short_history_is_a_clean_error(runner, tmp_path):
    short = write_prices(tmp_path / "short.csv", 60)
    result = runner.invoke(main, ["risk", "--prices", str(short)])
    assert result.exit_code == 1
    assert "Error: " in result.output and "not enough for fhs_apc" in result.output
    assert "Traceback" not in result.output


def test_risk__missing_file_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(main, ["risk", "--prices", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_backtest__writes_the_spec_json_the_validation_and_a_plot(runner, prices, tmp_path):
    out = tmp_path / "out" / "bt.json"
    args = ["backtest", "--prices", str(prices), "--json", str(out), "--no-candidates"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "recommended" in result.output and "static_ex_ante_equal_margin" in result.output
    doc = json.loads(out.read_text())
    assert set(doc) == {"asset", "hours", "confidence", "horizon_hours", "models"}
    assert doc["asset"] == "BTC/USDT"
    assert doc["hours"] == 1500 - 720 - 1
    assert doc["confidence"] == 0.99 and doc["horizon_hours"] == 1
    assert list(doc["models"])[:2] == ["recommended", "static_equal_margin"]
    assert "static_ex_ante" in doc["models"] and "previous" in doc["models"]
    for name, figures in doc["models"].items():
        assert set(figures) == BACKTEST_MODEL_KEYS, name
    checks = json.loads((out.parent / "bt_validation.json").read_text())
    assert checks["market"] == "BTC" and "outages" in checks
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backtest__from_to_horizon_and_confidence_reach_the_json(runner, prices, tmp_path):
    out = tmp_path / "bt.json"
    first = datetime.fromtimestamp(T0 + 1000 * 3600, UTC).strftime("%Y-%m-%d")
    last = datetime.fromtimestamp(T0 + 1300 * 3600, UTC).strftime("%Y-%m-%d")
    args = [
        "backtest",
        "--prices",
        str(prices),
        "--json",
        str(out),
        "--no-candidates",
        "--from",
        first,
        "--to",
        last,
        "--confidence",
        "0.975",
        "--horizon",
        "4",
        "--plot",
        str(tmp_path / "p.png"),
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert (doc["confidence"], doc["horizon_hours"]) == (0.975, 4)
    start = datetime.strptime(first, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    stop = datetime.strptime(last, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() + 86_400
    assert doc["hours"] == (stop - start) // 3600
    assert (tmp_path / "p.png").exists()


def test_backtest__config_and_market_mistakes_are_usage_errors(runner, prices, tmp_path):
    bad = tmp_path / "risk.yaml"
    bad.write_text("markets: [\n")
    result = runner.invoke(main, ["backtest", "--prices", str(prices), "--config", str(bad)])
    assert result.exit_code == 2 and "not valid YAML" in result.output
    result = runner.invoke(main, ["backtest", "--prices", str(prices), "--market", "DOGE"])
    assert result.exit_code == 2 and "no market for 'DOGE'" in result.output
    assert "Traceback" not in result.output


def test_backtest__too_short_file_is_a_clean_error(runner, tmp_path):
    short = write_prices(tmp_path / "short.csv", 800)
    result = runner.invoke(main, ["backtest", "--prices", str(short), "--json", "x.json"])
    assert result.exit_code == 1
    assert "Error: " in result.output and "need at least 100" in result.output
    assert "Traceback" not in result.output


def test_backtest__header_only_file_is_a_clean_error(runner, tmp_path):
    empty = tmp_path / "header.csv"
    empty.write_text("unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount\n")
    result = runner.invoke(main, ["backtest", "--prices", str(empty)])
    assert result.exit_code == 1
    assert "header.csv: no usable price rows (no data rows)" in result.output
    assert "Traceback" not in result.output


def test_backtest__a_2_gb_file_is_refused_in_one_line(runner, tmp_path):
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as handle:
        handle.truncate(2 * 2**30)
    result = runner.invoke(main, ["backtest", "--prices", str(huge)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "larger than the 256 MiB" in result.output
