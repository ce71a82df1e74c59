"""Coverage tests against textbook values, the guardrail replay, and the walk-forward backtest
on synthetic data and on the real BTC and ETH files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from offchain import WAD
from offchain.protocol.margin_math import Guardrails
from offchain.risk.backtest import (
    BacktestConfig,
    christoffersen,
    format_table,
    horizon_losses,
    kupiec_pof,
    max_rise,
    replay_guardrails,
    run_backtest,
    shortfall,
    transition_counts,
)
from offchain.risk.calibration import DEFAULT_GUARDRAILS, DEFAULT_TIERS, Policy
from offchain.risk.prices import Candles, load_candles
from tests.spec_keys import BACKTEST_MODEL_KEYS

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
T0 = 1_600_000_000 // 3600 * 3600
TIER0_RATE = DEFAULT_TIERS[0].maintenance_rate / WAD  # 0.5%
SPEC_TOP_KEYS = {"asset", "hours", "confidence", "horizon_hours", "models"}


def breaches(n: int, at: list[int]) -> np.ndarray:
    b = np.zeros(n, dtype=bool)
    b[at] = True
    return b


# ---------------------------------------------------------------------------------------------
# Kupiec


def test_kupiec_pof__jorion_style_250_days_8_breaches_at_99():
    n, x, p = 250, 8, 0.01
    p_hat = x / n
    lr = -2 * (
        (n - x) * math.log(1 - p)
        + x * math.log(p)
        - (n - x) * math.log(1 - p_hat)
        - x * math.log(p_hat)
    )
    out = kupiec_pof(breaches(n, list(range(0, 240, 30))), p)
    assert out.statistic == pytest.approx(lr, rel=1e-12)
    assert out.statistic == pytest.approx(7.7336, abs=1e-4)
    assert out.p_value == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-12)
    assert out.p_value == pytest.approx(0.00542, abs=1e-5)  # rejected at 5%


@pytest.mark.parametrize(
    ("days", "p", "low", "high"),
    [(510, 0.01, 1, 11), (1000, 0.01, 4, 17), (510, 0.05, 16, 36), (1000, 0.05, 37, 65)],
)
def test_kupiec_pof__published_nonrejection_regions(days, p, low, high):
    """Kupiec (1995) 95% non-rejection regions, as tabulated in Jorion's *Value at Risk*:
    ``low < N < high`` breaches in ``days`` days are not rejected."""

    def p_value(x: int) -> float:
        return kupiec_pof(breaches(days, list(range(x))), p).p_value

    assert p_value(low) < 0.05 and p_value(high) < 0.05
    assert p_value(low + 1) >= 0.05 and p_value(high - 1) >= 0.05


def test_kupiec_pof__edge_counts():
    assert kupiec_pof(breaches(200, [5, 50]), 0.01).statistic == pytest.approx(0.0, abs=1e-12)
    assert kupiec_pof(breaches(200, [5, 50]), 0.01).p_value == pytest.approx(1.0)
    # no breach at all: LR = -2 n ln(1 - p)
    assert kupiec_pof(np.zeros(250, bool), 0.01).statistic == pytest.approx(-500 * math.log(0.99))
    # every hour a breach: LR = -2 n ln p
    assert kupiec_pof(np.ones(10, bool), 0.01).statistic == pytest.approx(-20 * math.log(0.01))


def test_kupiec_pof__rejects_bad_arguments():
    with pytest.raises(ValueError, match="p must lie"):
        kupiec_pof(np.zeros(5, bool), 0.0)
    with pytest.raises(ValueError, match="no observations"):
        kupiec_pof(np.zeros(0, bool), 0.01)


# ---------------------------------------------------------------------------------------------
# Christoffersen


SEQUENCE = [0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]


def test_transition_counts__counted_by_hand():
    # pairs: 00 x10, 01 x3, 10 x3, 11 x3 (19 transitions for 20 hours)
    assert transition_counts(np.array(SEQUENCE, bool)) == (10, 3, 3, 3)


def test_christoffersen__hand_computed_statistics():
    b = np.array(SEQUENCE, bool)
    n00, n01, n10, n11 = 10, 3, 3, 3
    pi01, pi11, pi = n01 / (n00 + n01), n11 / (n10 + n11), (n01 + n11) / 19
    lr_ind = -2 * (
        (n00 + n10) * math.log(1 - pi)
        + (n01 + n11) * math.log(pi)
        - n00 * math.log(1 - pi01)
        - n01 * math.log(pi01)
        - n10 * math.log(1 - pi11)
        - n11 * math.log(pi11)
    )
    x, n, p = 6, 20, 0.1
    lr_uc = -2 * (
        (n - x) * math.log(1 - p)
        + x * math.log(p)
        - (n - x) * math.log(1 - x / n)
        - x * math.log(x / n)
    )
    ind, cc = christoffersen(b, p)
    assert ind.statistic == pytest.approx(lr_ind, rel=1e-12)
    # by hand: -2 (13 ln(13/19) + 6 ln(6/19) - 10 ln(10/13) - 3 ln(3/13) - 6 ln(1/2)) = 1.3358
    assert ind.statistic == pytest.approx(1.3358, abs=1e-4)
    assert ind.p_value == pytest.approx(stats.chi2.sf(lr_ind, 1), rel=1e-12)
    assert cc.statistic == pytest.approx(lr_uc + lr_ind, rel=1e-12)
    assert cc.p_value == pytest.approx(stats.chi2.sf(lr_uc + lr_ind, 2), rel=1e-12)


def test_christoffersen__clustered_breaches_fail_independence():
    # 1% of 2,000 hours, right coverage, but in five blocks of four
    clustered = breaches(2000, [s + i for s in (100, 500, 900, 1300, 1700) for i in range(4)])
    spread = breaches(2000, list(range(50, 2000, 100)))
    assert kupiec_pof(clustered, 0.01).p_value == pytest.approx(1.0)
    ind, cc = christoffersen(clustered, 0.01)
    assert ind.p_value < 1e-6 and cc.p_value < 1e-6
    ind, cc = christoffersen(spread, 0.01)
    assert ind.p_value > 0.4 and cc.p_value > 0.4


def test_christoffersen__no_breach_is_independent():
    ind, _ = christoffersen(np.zeros(100, bool), 0.01)
    assert ind.statistic == 0.0 and ind.p_value == 1.0
    with pytest.raises(ValueError, match="two observations"):
        christoffersen(np.zeros(1, bool), 0.01)


# ---------------------------------------------------------------------------------------------
# Margin statistics


def test_max_rise__largest_rise_within_a_window():
    m = np.array([1.0, 1.0, 2.0, 1.0, 3.0, 0.5])
    assert max_rise(m, window=2) == 2.0  # 3 - min(2, 1, 3)
    assert max_rise(m, window=1) == 2.0  # 3 - 1
    # a rise spread over several hours counts whole
    assert max_rise(np.array([1.0, 1.5, 2.0, 2.5, 3.0]), window=24) == 2.0
    assert max_rise(np.array([3.0, 2.0, 1.0])) == 0.0


def test_shortfall__loss_beyond_margin_on_breaches_only():
    loss = np.array([0.01, 0.05, -0.02, 0.031])
    assert shortfall(loss, np.full(4, 0.03)) == pytest.approx(0.02 + 0.001)


def test_horizon_losses__long_and_short():
    close = np.array([100.0, 90.0, 99.0, 110.0])
    long, short = horizon_losses(close, 0, 3, 1)
    np.testing.assert_allclose(long, [0.1, -0.1, -1 / 9])
    np.testing.assert_allclose(short, [-0.1, 0.1, 1 / 9])
    long2, _ = horizon_losses(close, 0, 2, 2)
    np.testing.assert_allclose(long2, [0.01, -110 / 90 + 1])


# ---------------------------------------------------------------------------------------------
# Guardrail replay

G = Guardrails(
    min_multiplier=WAD,
    max_multiplier=10 * WAD,
    max_increase=WAD // 2,  # +50% per update
    max_decrease=WAD // 10,  # -10% per update
    min_decrease_interval=7200,  # one decrease every two hours at most
    heartbeat=7200,
    stale_multiplier=4 * WAD,
    increase_ramp=0,
    max_funding_rate=10**12,
)


def assert_within_guardrails(rate: np.ndarray, g: Guardrails, step_hours: int = 1) -> None:
    """Rates in force, hourly: each move within the registry's limits."""
    lo, hi = g.min_multiplier / WAD * TIER0_RATE, g.max_multiplier / WAD * TIER0_RATE
    assert np.all(rate >= lo * (1 - 1e-12)) and np.all(rate <= hi * (1 + 1e-12))
    ratio = rate[1:] / rate[:-1]
    assert np.all(ratio <= 1 + g.max_increase / WAD + 1e-12)
    assert np.all(ratio >= 1 - g.max_decrease / WAD - 1e-12)
    decreases = np.flatnonzero(ratio < 1 - 1e-12) + 1
    assert np.all(np.diff(decreases) * 3600 * step_hours >= g.min_decrease_interval)


def test_replay_guardrails__hand_computed_path():
    rates = np.array([0.01] * 5 + [0.09] * 5 + [0.004] * 8)
    times = [T0 + 3600 * i for i in range(len(rates))]
    out = replay_guardrails(rates, times, G)
    expected_multipliers = (
        [2.0] * 5  # 1%: 2x of 0.5%
        + [3.0, 4.5, 6.75, 10.0, 10.0]  # +50% an hour up to the 10x cap (9% asks 18x)
        + [9.0, 9.0, 8.1, 8.1, 7.29, 7.29, 6.561, 6.561]  # -10% every two hours
    )
    np.testing.assert_allclose(out.rate, np.array(expected_multipliers) * 0.005, rtol=1e-9)
    assert out.clamped_hours == 5 + 8  # every hour of the spike and the fall is clamped
    assert_within_guardrails(out.rate, G)


def test_replay_guardrails__hysteresis_and_heartbeat_set_the_pushes():
    # changes of under 5% an hour are not pushed, except to refresh before the heartbeat
    rates = 0.01 * (1 + 0.001 * np.arange(20))
    out = replay_guardrails(rates, [T0 + 3600 * i for i in range(20)], G)
    assert out.pushes == 10  # every other hour (heartbeat two hours)
    assert np.all(np.diff(out.rate) >= 0)


def test_replay_guardrails__rejects_missing_rates():
    with pytest.raises(ValueError, match="no rate"):
        replay_guardrails(np.array([0.01, np.nan]), [T0, T0 + 3600], G)
    with pytest.raises(ValueError, match="2 rates for 1 times"):
        replay_guardrails(np.array([0.01, 0.01]), [T0], G)


def synthetic_candles(n: int, seed: int) -> Candles:
    """Fat-tailed hourly prices with calm and stormy months and two crash hours."""
    rng = np.random.default_rng(seed)
    vol = np.where((np.arange(n - 1) // 300) % 2 == 0, 0.004, 0.015)
    r = vol * rng.standard_t(3, n - 1) / math.sqrt(3)
    r[[900, 1500]] = [-0.12, 0.10]
    close = 100 * np.exp(np.concatenate(([0.0], np.cumsum(r))))
    o = np.concatenate(([close[0]], close[:-1]))
    h, lo = np.maximum(o, close) * 1.002, np.minimum(o, close) * 0.998
    return Candles(T0 + 3600 * np.arange(n, dtype=np.int64), o, h, lo, close, "SYN/USD")


@pytest.mark.parametrize("guardrails", [G, DEFAULT_GUARDRAILS])
def test_run_backtest__synthetic_margins_move_within_the_guardrails(guardrails):
    candles = synthetic_candles(2000, seed=8)
    config = BacktestConfig(
        warmup=300, guardrails=guardrails, candidates=(), policy=Policy(floor_window=None)
    )
    result = run_backtest(candles, config)
    assert result.hours == 2000 - 300 - 1
    margin = result.margins["recommended"]
    assert len(margin) == result.hours
    assert_within_guardrails(margin, guardrails)
    # the crash hours were breaches and the margin rose right after them
    i = 900 - 300
    assert result.loss_long[i] > margin[i] and margin[i + 1] > margin[i]
    assert result.models["recommended"].pushes < result.hours
    assert set(result.models) == {"recommended", "static_equal_margin", "flat_3pct", "flat_0_5pct"}


# ---------------------------------------------------------------------------------------------
# The real files: BTC and ETH, 99% over one hour


@pytest.fixture(scope="module", params=["btc", "eth"])
def real(request):
    candles, _ = load_candles(DATA / f"binance_{request.param}usdt_1h.csv")
    return candles, run_backtest(candles)


def test_real_backtest__recommended_model_passes_coverage_tests(real):
    _, result = real
    rec = result.models["recommended"]
    assert rec.kupiec_long.p_value >= 0.05 and rec.kupiec_short.p_value >= 0.05
    assert rec.independence_long.p_value >= 0.05 and rec.independence_short.p_value >= 0.05
    assert 0.008 < rec.breach_rate_long < 0.012 and 0.008 < rec.breach_rate_short < 0.012


def test_real_backtest__shortfall_well_below_static_at_equal_average_margin(real):
    _, result = real
    rec, static = result.models["recommended"], result.models["static_equal_margin"]
    assert static.avg_margin_rate == pytest.approx(rec.avg_margin_rate, rel=1e-12)
    assert rec.total_shortfall <= 0.7 * static.total_shortfall
    # and a static margin at that level fails the coverage tests
    assert static.kupiec_long.p_value < 0.05 or static.kupiec_short.p_value < 0.05


def test_real_backtest__json_has_exactly_the_spec_keys(real):
    candles, result = real
    doc = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert set(doc) == SPEC_TOP_KEYS
    assert doc["asset"] == candles.symbol
    assert doc["hours"] == len(candles) - 720 - 1
    assert (doc["confidence"], doc["horizon_hours"]) == (0.99, 1)
    assert {"recommended", "static_equal_margin"} <= set(doc["models"])
    for name, figures in doc["models"].items():
        assert set(figures) == BACKTEST_MODEL_KEYS, name
        assert all(isinstance(v, float) and math.isfinite(v) for v in figures.values()), name
        # (a flat rate's mean is off by rounding: 0.03 averages to 0.030000000000000013)
        assert figures["peak_margin_rate"] >= figures["avg_margin_rate"] * (1 - 1e-12) > 0
    rec = result.models["recommended"]
    assert doc["models"]["recommended"]["christoffersen_p_long"] == rec.independence_long.p_value
    assert doc["models"]["recommended"]["breach_rate_long"] * doc["hours"] == pytest.approx(
        rec.breaches_long
    )


def test_real_backtest__margins_in_force_respect_the_registry(real):
    _, result = real
    for name in ("recommended", "ewma", "garch_t", "fhs", "range_gk", "fhs_es"):
        assert_within_guardrails(result.margins[name], DEFAULT_GUARDRAILS)
    assert result.models["recommended"].peak_margin_rate == pytest.approx(0.09)
    text = format_table(result)
    assert "below the static baseline" in text and "recommended" in text
