"""``dmm backtest-portfolio`` through click's CliRunner: SPEC.md's JSON on small correlated
price files, and one line with exit code 2 for each kind of bad input."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from offchain.cli import main
from tests.spec_keys import PORTFOLIO_FAMILY_KEYS, PORTFOLIO_TOP_KEYS

T0 = 1_600_000_000 // 3600 * 3600


def write_pair(folder: Path, n: int, seed: int = 5, offset_hours: int = 0) -> list[Path]:
    """Two correlated fat-tailed markets in the freqtrade layout (``date,open_time_ms,...``)."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, 2)) @ np.linalg.cholesky([[1, 0.8], [0.8, 1]]).T
    x = 0.006 * g / np.sqrt(rng.chisquare(4, n) / 4)[:, None] / math.sqrt(2)
    paths = []
    for i, (name, p0) in enumerate((("btcusdt", 20_000.0), ("ethusdt", 1_500.0))):
        close = p0 * np.exp(np.cumsum(x[:, i]))
        lines = ["date,open_time_ms,open,high,low,close,volume"]
        for j in range(n):
            t = T0 + 3600 * (j + offset_hours * i)
            o = close[j - 1] if j else close[0]
            c = close[j]
            day = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            lines.append(
                f"{day},{t * 1000},{o:.4f},{max(o, c) * 1.001:.4f},{min(o, c) * 0.999:.4f},"
                f"{c:.4f},12.5"
            )
        path = folder / f"binance_{name}_1h_test.csv"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> list[Path]:
    return write_pair(tmp_path_factory.mktemp("portfolio"), 1700)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(mix_stderr=False)


def one_line(stderr: str, error: str) -> bool:
    """stderr is that one error line (usage errors add a pointer to the command's help)."""
    text = stderr.strip()
    return text.count("\n") == 0 and (
        text == error or text == f"{error} (see dmm backtest-portfolio --help)"
    )


def args_for(paths: list[Path]) -> list[str]:
    out = ["-q", "backtest-portfolio"]  # quiet: stderr holds the error line alone
    for p in paths:
        out += ["--prices", str(p)]
    return out


def test_backtest_portfolio__spec_json_on_stdout_and_a_plot(runner, pair, tmp_path):
    png = tmp_path / "p.png"
    result = runner.invoke(main, [*args_for(pair), "--json", "-", "--plot", str(png)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert set(doc) >= PORTFOLIO_TOP_KEYS
    assert doc["markets"] == ["BTC", "ETH"]
    assert doc["confidence"] == 0.99 and doc["horizon_hours"] == 1
    fams = doc["families"]
    assert {"outright", "hedged_pair", "random", "concentrated", "adversarial"} <= set(fams)
    for name, figures in fams.items():
        assert set(figures) >= PORTFOLIO_FAMILY_KEYS, name
        assert 0 <= figures["breach_rate"] <= 1
    # an outright book is not eligible: it keeps the tiered sum, breaches and shortfall included
    out = fams["outright"]
    assert out["avg_margin_saving_vs_tiered"] == 0
    assert out["total_shortfall"] == out["tiered_total_shortfall"]
    # the hedged pair gets credit, never more than the tiered sum allows
    assert 0 < fams["hedged_pair"]["avg_margin_saving_vs_tiered"] < 1
    assert fams["hedged_pair"]["total_shortfall"] >= fams["hedged_pair"]["tiered_total_shortfall"]
    assert doc["parameters"]["n_scenarios"] <= 16
    assert set(doc["adversarial"]) == {"searched", "latest"}
    assert doc["adversarial"]["latest"]["ratio"] > 0
    assert "portfolio margin BTC/ETH" in result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backtest_portfolio__window_sets_the_hours(runner, pair, tmp_path):
    out = tmp_path / "bt.json"
    start = datetime.fromtimestamp(T0 + 3600 * 1200, UTC).strftime("%Y-%m-%d")
    result = runner.invoke(main, [*args_for(pair), "--from", start, "--json", str(out)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(out.read_text())
    full = json.loads(runner.invoke(main, [*args_for(pair), "--json", "-"]).stdout)
    assert 0 < doc["hours"] < full["hours"]
    assert out.with_suffix(".png").exists()
    assert f"wrote {out}" in result.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--from", "2021-02-01", "--to", "2021-01-01"], "--from 2021-02-01 is after --to"),
        (["--from", "01/02/2021"], "--from must be a date YYYY-MM-DD"),
    ],
)
def test_backtest_portfolio__bad_window_is_one_line(runner, pair, extra, message):
    result = runner.invoke(main, [*args_for(pair), *extra])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("Error: ") and message in result.stderr


def test_backtest_portfolio__window_outside_the_data_is_one_line(runner, pair):
    result = runner.invoke(main, [*args_for(pair), "--from", "2030-01-01"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "misses the files' common hours (2020-09-13 12:00 UTC .." in result.stderr


def test_backtest_portfolio__one_file_is_one_line(runner, pair):
    result = runner.invoke(main, args_for(pair[:1]))
    assert result.exit_code == 2
    assert one_line(result.stderr, "Error: need --prices for two markets or more, got 1")


def test_backtest_portfolio__missing_file_is_one_line(runner, pair, tmp_path):
    result = runner.invoke(main, args_for([pair[0], tmp_path / "nope.csv"]))
    assert result.exit_code == 2
    assert one_line(result.stderr, f"Error: --prices {tmp_path / 'nope.csv'}: no such file")


def test_backtest_portfolio__no_common_hours_is_one_line(runner, tmp_path):
    apart = write_pair(tmp_path, 50, offset_hours=100)
    result = runner.invoke(main, args_for(apart))
    assert result.exit_code == 2
    assert one_line(result.stderr, "Error: the price files share no hour")
    assert "Traceback" not in result.stderr


def test_backtest_portfolio__same_market_twice_is_one_line(runner, pair):
    result = runner.invoke(main, args_for([pair[0], pair[0]]))
    assert result.exit_code == 2
    assert one_line(result.stderr, "Error: the same market twice: BTC, BTC")
