"""VaR and ES against closed forms, counting, and the walk-forward and many-market paths."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import integrate, stats

from offchain.risk.prices import Candles
from offchain.risk.risk_measures import (
    RiskModel,
    check_confidence,
    empirical_var_es,
    fhs_var_es,
    historical_var_es,
    latest_risk_many,
    normal_var_es,
    pooled,
    risk_series,
    scale_to_horizon,
    side_losses,
    student_t_var_es,
    tail_count,
    to_notional_loss,
)

T0 = 1_600_000_000 // 3600 * 3600


def gbm_candles(n: int, seed: int, sigma: float = 0.01, symbol: str = "SYN") -> Candles:
    """Hourly closes of a geometric random walk with fat tails and a calm/volatile regime."""
    rng = np.random.default_rng(seed)
    vol = np.where(np.arange(n - 1) % 800 < 400, sigma, 3 * sigma)
    r = vol * rng.standard_t(4, n - 1) / math.sqrt(2)
    close = 100 * np.exp(np.concatenate(([0.0], np.cumsum(r))))
    t = T0 + 3600 * np.arange(n, dtype=np.int64)
    return Candles(t, close, close, close, close, symbol, has_ohlc=False)


# ---------------------------------------------------------------------------------------------
# Parametric


def test_normal_var_es__closed_form():
    out = normal_var_es(0.02, 0.99)
    z = 2.3263478740408408  # Phi^-1(0.99)
    assert float(out.var) == pytest.approx(0.02 * z, rel=1e-12)
    phi = math.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    assert float(out.es) == pytest.approx(0.02 * phi / 0.01, rel=1e-12)
    assert float(out.es) == pytest.approx(0.02 * 2.6652142203458076, rel=1e-12)


def test_normal_var_es__es_is_the_tail_average_of_the_quantile():
    c = 0.975
    es, _ = integrate.quad(lambda u: stats.norm.ppf(u), c, 1)
    assert float(normal_var_es(1.0, c).es) == pytest.approx(es / (1 - c), rel=1e-7)
    # At 97.5% the normal ES equals the 99% VaR to three digits (FRTB's equivalence).
    assert float(normal_var_es(1.0, c).es) == pytest.approx(2.3378, abs=1e-4)


def test_normal_var_es__vectorised_over_sigma():
    out = normal_var_es(np.array([0.01, 0.02, 0.04]), 0.99)
    np.testing.assert_allclose(out.var / np.array([0.01, 0.02, 0.04]), stats.norm.ppf(0.99))


@pytest.mark.parametrize("nu", [3.0, 4.0, 6.0, 30.0])
def test_student_t_var_es__unit_variance_closed_form(nu):
    sigma, c = 0.015, 0.99
    out = student_t_var_es(sigma, nu, c)
    s = math.sqrt((nu - 2) / nu)  # the t is scaled to standard deviation sigma
    assert stats.t.std(nu) * s == pytest.approx(1.0)
    q = stats.t.ppf(c, nu)
    assert float(out.var) == pytest.approx(sigma * s * q, rel=1e-12)
    es_closed = sigma * s * stats.t.pdf(q, nu) / (1 - c) * (nu + q**2) / (nu - 1)
    assert float(out.es) == pytest.approx(es_closed, rel=1e-12)
    # and ES is the average of the quantiles beyond c
    tail, _ = integrate.quad(lambda u: stats.t.ppf(u, nu), c, 1, limit=200)
    assert float(out.es) == pytest.approx(sigma * s * tail / (1 - c), rel=1e-6)


def test_student_t_var_es__known_value_nu_4():
    # t_4 has a closed-form quantile: a = 4p(1-p), q = cos(acos(sqrt a) / 3) / sqrt a,
    # t = 2 sqrt(q - 1) = 3.746947 at p = 0.99; scaled by sqrt(2/4): 2.649492 standard deviations
    a = 4 * 0.99 * 0.01
    q = math.cos(math.acos(math.sqrt(a)) / 3) / math.sqrt(a)
    t = 2 * math.sqrt(q - 1)
    assert t == pytest.approx(3.746947, abs=1e-6)
    assert float(student_t_var_es(1.0, 4.0, 0.99).var) == pytest.approx(t / math.sqrt(2), rel=1e-12)


def test_student_t_var_es__tends_to_normal_for_large_nu():
    t = student_t_var_es(0.01, 1e7, 0.99)
    n = normal_var_es(0.01, 0.99)
    assert float(t.var) == pytest.approx(float(n.var), rel=1e-6)
    assert float(t.es) == pytest.approx(float(n.es), rel=1e-6)


def test_student_t_var_es__fatter_tail_than_normal_at_99():
    t, n = student_t_var_es(0.01, 4.0, 0.99), normal_var_es(0.01, 0.99)
    assert float(t.var) > float(n.var) and float(t.es) > float(n.es)


@pytest.mark.parametrize("nu", [2.0, 1.5, float("nan")])
def test_student_t_var_es__rejects_infinite_variance(nu):
    with pytest.raises(ValueError, match="nu must exceed 2"):
        student_t_var_es(0.01, nu, 0.99)


@pytest.mark.parametrize("c", [0.5, 1.0, 0.3, 1.2])
def test_check_confidence__rejects_outside_half_to_one(c):
    with pytest.raises(ValueError, match="confidence must lie in"):
        check_confidence(c)


# ---------------------------------------------------------------------------------------------
# Empirical


@pytest.mark.parametrize(
    ("n", "c", "k"),
    [(100, 0.95, 5), (100, 0.99, 1), (250, 0.99, 3), (10, 0.99, 1), (1000, 0.99, 10)],
)
def test_tail_count__ceil_of_n_alpha(n, c, k):
    assert tail_count(n, c) == k


def test_historical_var_es__counted_on_a_crafted_sample():
    # a long loses 0.1%, 0.2%, ..., 10%: at 95% the tail is the 5 largest, 9.6% .. 10%
    returns = -np.arange(1, 101) / 1000
    rng = np.random.default_rng(0)
    returns = rng.permutation(returns)
    long = historical_var_es(returns, 0.95, "long")
    assert float(long.var) == pytest.approx(0.096)
    assert float(long.es) == pytest.approx(0.098)
    at99 = historical_var_es(returns, 0.99, "long")
    assert float(at99.var) == float(at99.es) == pytest.approx(0.1)
    # a short gains on every one of these hours: its largest loss is the smallest gain
    short = historical_var_es(returns, 0.95, "short")
    assert float(short.var) == pytest.approx(-0.005)
    assert float(short.es) == pytest.approx(-0.003)


def test_historical_var_es__overlapping_two_hour_windows():
    r = np.array([0.01, -0.03, -0.02, 0.04, -0.01])
    # two-hour sums: -0.02, -0.05, 0.02, 0.03 -> long losses 0.02, 0.05, -0.02, -0.03
    out = historical_var_es(r, 0.6, "long", horizon=2)  # k = ceil(4 * 0.4) = 2
    assert float(out.var) == pytest.approx(0.02)
    assert float(out.es) == pytest.approx(0.035)
    with pytest.raises(ValueError, match="at least 6 returns"):
        historical_var_es(r, 0.6, "long", horizon=6)


def test_empirical_var_es__along_an_axis_equals_per_column():
    rng = np.random.default_rng(4)
    x = rng.standard_t(3, (500, 3))
    both = empirical_var_es(x, 0.99, axis=0)
    for j in range(3):
        one = empirical_var_es(x[:, j], 0.99)
        assert both.var[j] == one.var
        assert both.es[j] == pytest.approx(float(one.es), rel=1e-14)
        top = np.sort(x[:, j])[-5:]  # k = ceil(500 * 0.01) = 5
        assert both.var[j] == top[0]
        assert both.es[j] == pytest.approx(top.mean(), rel=1e-14)


def test_empirical_var_es__rejects_nan_and_empty():
    with pytest.raises(ValueError, match="NaN"):
        empirical_var_es(np.array([1.0, np.nan]), 0.99)
    with pytest.raises(ValueError, match="no losses"):
        empirical_var_es(np.array([]), 0.99)


def test_side_losses_and_pooling():
    r = np.array([0.01, -0.02])
    np.testing.assert_array_equal(side_losses(r, "long"), [-0.01, 0.02])
    np.testing.assert_array_equal(side_losses(r, "short"), [0.01, -0.02])
    np.testing.assert_array_equal(pooled(r, None), [0.01, -0.02, -0.01, 0.02])
    with pytest.raises(ValueError, match="side must be"):
        side_losses(r, "both")  # type: ignore[arg-type]


def test_fhs_var_es__scales_the_residual_tail_by_sigma():
    rng = np.random.default_rng(5)
    z = rng.standard_t(4, 2000)
    tail = empirical_var_es(-z, 0.99)  # a long loses -z
    out = fhs_var_es(z, 0.03, 0.99, "long")
    assert float(out.var) == pytest.approx(0.03 * float(tail.var), rel=1e-14)
    assert float(out.es) == pytest.approx(0.03 * float(tail.es), rel=1e-14)
    double = fhs_var_es(z, 0.06, 0.99, "long")
    assert float(double.var) == pytest.approx(2 * float(out.var), rel=1e-14)
    assert float(double.es) == pytest.approx(2 * float(out.es), rel=1e-14)


def test_fhs_var_es__symmetric_pools_both_tails_and_drops_nan():
    z = np.array([-3.0, -1.0, 0.0, 0.5, 2.0, np.nan] + [0.1] * 94)
    sym_long = fhs_var_es(z, 1.0, 0.99, "long", symmetric=True)
    sym_short = fhs_var_es(z, 1.0, 0.99, "short", symmetric=True)
    assert float(sym_long.var) == float(sym_short.var)
    # 99 finite residuals and their mirrors: k = ceil(198 * 0.01) = 2 -> losses 3 and 2
    assert float(sym_long.var) == 2.0
    assert float(sym_long.es) == 2.5
    assert float(fhs_var_es(z, 1.0, 0.99, "short").var) == 2.0  # k = 1 of 99: the 2.0
    with pytest.raises(ValueError, match="sigma"):
        fhs_var_es(z, -1.0, 0.99, "long")


def test_to_notional_loss__exact_conversion_of_log_losses():
    assert float(to_notional_loss(math.log(2), "long")) == pytest.approx(0.5)
    assert float(to_notional_loss(math.log(2), "short")) == pytest.approx(1.0)
    assert float(to_notional_loss(0.0, "long")) == 0.0


def test_scale_to_horizon__square_root_of_time():
    assert float(scale_to_horizon(0.01, 4)) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="horizon"):
        scale_to_horizon(0.01, 0)


# ---------------------------------------------------------------------------------------------
# Models, walk-forward series, many markets


def test_risk_model__validates_its_parameters():
    with pytest.raises(ValueError, match="unknown volatility"):
        RiskModel(volatility="har")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs nu"):
        RiskModel(volatility="ewma", tail="student_t")
    with pytest.raises(ValueError, match="fhs_window"):
        RiskModel(fhs_window=100, fhs_min_obs=250)
    with pytest.raises(ValueError, match="fast < slow"):
        RiskModel(slow=0.7, fast=0.9)


def test_risk_series__normal_tail_is_sigma_times_z_in_notional_terms():
    candles = gbm_candles(600, seed=1)
    model = RiskModel(name="n", volatility="ewma", tail="normal", lam=0.94)
    out = risk_series(candles, model, horizon=4)
    z = stats.norm.ppf(0.99)
    np.testing.assert_allclose(out.var_long, -np.expm1(-2 * out.sigma * z), rtol=1e-12)
    np.testing.assert_allclose(out.var_short, np.expm1(2 * out.sigma * z), rtol=1e-12)
    np.testing.assert_array_equal(out.rate, out.var_short)  # a short loses more on e^L - 1


def test_risk_series__fhs_values_use_only_past_prices():
    candles = gbm_candles(1500, seed=2)
    model = dataclasses.replace(RiskModel(), fhs_min_obs=250)
    base = risk_series(candles, model)
    close = candles.close.copy()
    close[1000:] *= np.exp(np.linspace(0, 0.5, 500))
    changed = Candles(candles.timestamps, close, close, close, close, "SYN", has_ohlc=False)
    after = risk_series(changed, model)
    np.testing.assert_array_equal(base.var_long[:1000], after.var_long[:1000])
    np.testing.assert_array_equal(base.es_short[:1000], after.es_short[:1000])
    assert np.all(np.isnan(base.var_long[:250]))  # warming up: fewer than 250 residuals
    assert np.all(np.isfinite(base.var_long[264:]))


def test_latest_risk_many__equals_the_walk_forward_value_at_a_refresh_hour():
    # With T - 1 a multiple of fhs_refresh (24) both use every residual up to now.
    n = 24 * 60 + 1
    columns = [gbm_candles(n, seed=s) for s in (10, 11, 12)]
    closes = np.column_stack([c.close for c in columns])
    for model in (
        RiskModel(),
        RiskModel(name="es", measure="es", symmetric=False),
        RiskModel(name="n", volatility="ewma", tail="normal"),
    ):
        many = latest_risk_many(closes, model, horizon=2)
        for j, candles in enumerate(columns):
            one = risk_series(candles, model, horizon=2)
            assert many.sigma[j] == pytest.approx(one.sigma[-1], rel=1e-12)
            assert many.var_long[j] == pytest.approx(one.var_long[-1], rel=1e-12)
            assert many.var_short[j] == pytest.approx(one.var_short[-1], rel=1e-12)
            assert many.es_long[j] == pytest.approx(one.es_long[-1], rel=1e-12)
            assert many.es_short[j] == pytest.approx(one.es_short[-1], rel=1e-12)
            assert many.rate[j] == pytest.approx(one.rate[-1], rel=1e-12)


def test_latest_risk_many__rejects_bad_input():
    closes = np.full((50, 2), 100.0)
    with pytest.raises(ValueError, match="EWMA filters"):
        latest_risk_many(closes, RiskModel(volatility="garch_t", tail="student_t"))
    bad = closes.copy()
    bad[3, 1] = 0.0
    with pytest.raises(ValueError, match="finite and positive"):
        latest_risk_many(bad, RiskModel())
    with pytest.raises(ValueError, match="shape"):
        latest_risk_many(closes[:, 0], RiskModel())


def test_latest_risk_many__a_window_that_starts_in_flat_candles_is_safe():
    """33 flat candles at the start (an exchange outage): the seed variance is 0, the first
    residuals are 0/0 and r/0. They are left out, per market, instead of raising."""
    rng = np.random.default_rng(4)
    moving = 100 * np.exp(np.cumsum(rng.standard_normal(400) * 0.01))
    flat_first = np.concatenate((np.full(33, moving[0]), moving))
    closes = np.column_stack((flat_first, np.concatenate((moving, moving[-33:]))))
    out = latest_risk_many(closes, RiskModel())
    assert np.all(np.isfinite(out.rate)) and np.all(out.rate > 0)
    # the flat market's tail is that of its moving part
    alone = latest_risk_many(flat_first[33:, None], RiskModel())
    assert out.rate[0] == pytest.approx(alone.rate[0], rel=0.2)
