"""Volatility estimators against hand-computed values, closed forms and a seeded GARCH-t sample."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from offchain.risk.prices import Candles, load_candles
from offchain.risk.volatility import (
    ANNUALISATION,
    HOURS_PER_YEAR,
    DualEWMAVolatility,
    EWMAVolatility,
    GarchT,
    GarchTParams,
    RangeVolatility,
    _project_stationary,
    annualise,
    dual_ewma_variance,
    ewma_recursion,
    ewma_variance,
    fit_garch_t,
    garch_kkt_violation,
    garch_recursion,
    garman_klass_variance,
    parkinson_variance,
    seed_variance,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def simulate_garch_t(
    n: int, omega: float, alpha: float, beta: float, nu: float, seed: int, burn: int = 1000
) -> np.ndarray:
    """A GARCH(1,1) path with unit-variance Student-t innovations (independent of ``arch``)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_t(nu, n + burn) * math.sqrt((nu - 2) / nu)
    r = np.empty(n + burn)
    s2 = omega / (1 - alpha - beta)
    for t in range(n + burn):
        r[t] = math.sqrt(s2) * z[t]
        s2 = omega + alpha * r[t] ** 2 + beta * s2
    return r[burn:]


# ---------------------------------------------------------------------------------------------
# EWMA


def test_ewma_recursion__matches_hand_computation():
    # s0 = 2; s1 = .9*2 + .1*4 = 2.2; s2 = .9*2.2 + .1*1 = 2.08; s3 = .9*2.08 + .1*9 = 2.772
    out = ewma_recursion(np.array([4.0, 1.0, 9.0]), 0.9, 2.0)
    np.testing.assert_allclose(out, [2.0, 2.2, 2.08, 2.772], rtol=1e-14)


def test_ewma_recursion__columns_are_independent():
    x = np.array([[4.0, 0.25], [1.0, 0.0], [9.0, 1.0]])
    out = ewma_recursion(x, 0.8, np.array([2.0, 0.5]))
    assert out.shape == (4, 2)
    np.testing.assert_allclose(out[:, 0], ewma_recursion(x[:, 0], 0.8, 2.0), rtol=1e-14)
    np.testing.assert_allclose(out[:, 1], ewma_recursion(x[:, 1], 0.8, 0.5), rtol=1e-14)


def test_ewma_recursion__empty_series_is_the_initial_value():
    np.testing.assert_array_equal(ewma_recursion(np.array([]), 0.9, 3.0), [3.0])


@pytest.mark.parametrize("lam", [0.0, 1.0, -0.1, 1.5])
def test_ewma_recursion__rejects_decay_outside_unit_interval(lam):
    with pytest.raises(ValueError, match="lam must lie in"):
        ewma_recursion(np.ones(3), lam, 1.0)


def test_ewma_variance__seeds_with_mean_of_first_squares():
    r = np.array([0.01, -0.03, 0.02, 0.0, -0.01])
    out = ewma_variance(r, lam=0.94, seed_hours=2)
    s = (0.01**2 + 0.03**2) / 2
    expected = [s]
    for x in r:
        s = 0.94 * s + 0.06 * x**2
        expected.append(s)
    np.testing.assert_allclose(out, expected, rtol=1e-13)
    assert seed_variance(r**2, 2) == pytest.approx((0.01**2 + 0.03**2) / 2)


def test_ewma_forecast__uses_only_past_returns():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.01, 200)
    changed = r.copy()
    changed[150:] *= 5
    a, b = ewma_variance(r), ewma_variance(changed)
    np.testing.assert_array_equal(a[:151], b[:151])
    assert a[151] != b[151]


def test_dual_ewma__is_the_larger_of_the_two_filters():
    rng = np.random.default_rng(2)
    r = rng.normal(0, 0.01, 300)
    r[200] = 0.08  # a shock
    out = dual_ewma_variance(r, slow=0.97, fast=0.7)
    s = seed_variance(r**2)
    slow, fast = ewma_recursion(r**2, 0.97, s), ewma_recursion(r**2, 0.7, s)
    np.testing.assert_array_equal(out, np.maximum(slow, fast))
    # One hour after the shock the fast filter carries the forecast.
    assert out[201] == fast[201] > slow[201]
    assert fast[201] == pytest.approx(0.7 * fast[200] + 0.3 * 0.08**2)


def test_estimators__validate_their_parameters():
    with pytest.raises(ValueError, match="lam"):
        EWMAVolatility(lam=1.0)
    with pytest.raises(ValueError, match="seed_hours"):
        EWMAVolatility(seed_hours=0)
    with pytest.raises(ValueError, match="fast < slow"):
        DualEWMAVolatility(slow=0.7, fast=0.9)
    with pytest.raises(ValueError, match="estimator"):
        RangeVolatility(estimator="rogers")
    with pytest.raises(ValueError, match="refit_every"):
        GarchT(refit_every=0)
    with pytest.raises(ValueError, match="window"):
        GarchT(min_obs=720, window=500)


# ---------------------------------------------------------------------------------------------
# GARCH recursion and ranges


def test_garch_recursion__matches_hand_computation():
    # s1 = 1e-6 + .1 * 1e-4 + .8 * 1e-4 = 9.1e-5
    # s2 = 1e-6 + .1 * 4e-4 + .8 * 9.1e-5 = 1.138e-4
    out = garch_recursion(np.array([0.01, -0.02]), 1e-6, 0.1, 0.8, 1e-4)
    np.testing.assert_allclose(out, [1e-4, 9.1e-5, 1.138e-4], rtol=1e-12)


def test_garch_recursion__rejects_invalid_parameters():
    with pytest.raises(ValueError, match="omega > 0"):
        garch_recursion(np.ones(3), 0.0, 0.1, 0.8, 1.0)
    with pytest.raises(ValueError, match="alpha >= 0"):
        garch_recursion(np.ones(3), 1e-6, -0.1, 0.8, 1.0)


def test_parkinson_variance__hand_computed_candles():
    high = np.array([110.0, 100.0, 2.0])
    low = np.array([100.0, 100.0, 1.0])
    expected = [math.log(1.1) ** 2 / (4 * math.log(2)), 0.0, math.log(2) / 4]
    np.testing.assert_allclose(parkinson_variance(high, low), expected, rtol=1e-14)


def test_garman_klass_variance__hand_computed_candles():
    o = np.array([100.0, 100.0, 100.0])
    h = np.array([110.0, 100.0, 104.0])
    lo = np.array([95.0, 100.0, 100.0])
    c = np.array([105.0, 100.0, 104.0])
    k = 2 * math.log(2) - 1
    expected = [
        0.5 * math.log(110 / 95) ** 2 - k * math.log(1.05) ** 2,
        0.0,
        0.5 * math.log(1.04) ** 2 - k * math.log(1.04) ** 2,  # body = range
    ]
    np.testing.assert_allclose(garman_klass_variance(o, h, lo, c), expected, rtol=1e-14)


def test_garman_klass_variance__never_negative():
    # An impossible candle (a body outside a zero range) is floored at zero.
    assert garman_klass_variance(np.array([100.0]), [100.0], [100.0], [101.0])[0] == 0.0


def test_range_estimators__unbiased_on_simulated_brownian_candles():
    """Parkinson and Garman-Klass estimate the per-candle variance of a Brownian motion."""
    rng = np.random.default_rng(7)
    sigma, steps, candles = 0.01, 2000, 2000
    paths = np.cumsum(rng.normal(0, sigma / math.sqrt(steps), (candles, steps)), axis=1)
    log_p = np.concatenate((np.zeros((candles, 1)), paths), axis=1)
    o, c = np.exp(log_p[:, 0]), np.exp(log_p[:, -1])
    h, lo = np.exp(log_p.max(axis=1)), np.exp(log_p.min(axis=1))
    # Sampled at 2,000 points the range is biased down by about 0.7 / sqrt(2000), 1.6%.
    assert np.mean(parkinson_variance(h, lo)) == pytest.approx(sigma**2, rel=0.05)
    assert np.mean(garman_klass_variance(o, h, lo, c)) == pytest.approx(sigma**2, rel=0.05)


def test_range_volatility__needs_ohlc():
    t = np.arange(5, dtype=np.int64) * 3600 + 1_600_000_000 // 3600 * 3600
    close = np.array([1.0, 1.1, 1.0, 1.2, 1.1])
    candles = Candles(t, close, close, close, close, "X", has_ohlc=False)
    with pytest.raises(ValueError, match="needs OHLC"):
        RangeVolatility().variance(candles)


def test_range_volatility__is_ewma_of_garman_klass_of_the_return_candles():
    t = np.arange(6, dtype=np.int64) * 3600 + 1_600_000_000 // 3600 * 3600
    o = np.array([100.0, 100, 102, 101, 104, 103])
    c = np.array([100.0, 102, 101, 104, 103, 105])
    h = np.maximum(o, c) * 1.01
    lo = np.minimum(o, c) * 0.99
    out = RangeVolatility(lam=0.9, seed_hours=2).variance(Candles(t, o, h, lo, c, "X"))
    v = garman_klass_variance(o, h, lo, c)[1:]
    np.testing.assert_allclose(out, ewma_recursion(v, 0.9, v[:2].mean()), rtol=1e-14)


def test_annualise__hourly_volatility_over_a_crypto_year():
    assert HOURS_PER_YEAR == 8760
    assert pytest.approx(93.59487165438072) == ANNUALISATION
    assert float(annualise(0.01)) == pytest.approx(0.9359487165438072)
    np.testing.assert_allclose(annualise(np.array([0.01, 0.02]), 365), [0.19104973, 0.38209946])


# ---------------------------------------------------------------------------------------------
# GARCH(1,1)-t fit


OMEGA, ALPHA, BETA, NU = 2e-6, 0.08, 0.90, 5.0


@pytest.fixture(scope="module")
def garch_sample() -> np.ndarray:
    return simulate_garch_t(20_000, OMEGA, ALPHA, BETA, NU, seed=3)


@pytest.fixture(scope="module")
def garch_fit(garch_sample) -> GarchTParams:
    return fit_garch_t(garch_sample)


def test_fit_garch_t__recovers_simulated_parameters(garch_fit):
    """20,000 seeded GARCH(1,1)-t returns: alpha and beta within 0.02, persistence within 0.01,
    nu within 1, omega within 50% (about four standard errors each; over 12 seeds the largest
    errors were 0.009, 0.011, 0.33 and 21%)."""
    p = garch_fit
    assert p.converged
    assert p.alpha == pytest.approx(ALPHA, abs=0.02)
    assert p.beta == pytest.approx(BETA, abs=0.02)
    assert p.persistence == pytest.approx(ALPHA + BETA, abs=0.01)
    assert p.nu == pytest.approx(NU, abs=1.0)
    assert p.omega == pytest.approx(OMEGA, rel=0.5)
    assert p.unconditional_variance == pytest.approx(OMEGA / (1 - ALPHA - BETA), rel=0.25)
    assert not p.integrated


def test_fit_garch_t__warm_start_finds_the_same_maximum(garch_sample, garch_fit):
    warm = fit_garch_t(garch_sample, start=garch_fit)
    assert warm.converged
    assert warm.loglikelihood == pytest.approx(garch_fit.loglikelihood, abs=0.05)
    assert warm.persistence == pytest.approx(garch_fit.persistence, abs=1e-3)


def test_fit_garch_t__scale_only_changes_omega_units(garch_sample, garch_fit):
    # (returns * 4) * 25 is returns * 100 to the bit: the same percent-scaled problem
    p = fit_garch_t(garch_sample * 4, scale=25.0)
    assert p.alpha == pytest.approx(garch_fit.alpha, rel=1e-9)
    assert p.beta == pytest.approx(garch_fit.beta, rel=1e-9)
    assert p.nu == pytest.approx(garch_fit.nu, rel=1e-9)
    assert p.omega == pytest.approx(16 * garch_fit.omega, rel=1e-9)


def test_fit_garch_t__rejects_bad_input():
    with pytest.raises(ValueError, match="at least 100"):
        fit_garch_t(np.zeros(50))
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_garch_t(np.r_[np.full(200, 0.01), np.nan])
    with pytest.raises(ValueError, match="scale"):
        fit_garch_t(np.full(200, 0.01), scale=0)


def test_garch_kkt_violation__interior_and_boundary_points():
    interior = np.array([0.05, 0.08, 0.9, 5.0])
    assert garch_kkt_violation(interior, np.zeros(4)) == 0.0
    # omega's gradient times omega is the log-likelihood gained by a relative move
    assert garch_kkt_violation(interior, np.array([40.0, 0, 0, 0])) == pytest.approx(2.0)
    boundary = np.array([0.05, 0.07, 0.93, 3.2])
    # On alpha + beta = 1 the likelihood may rise outward (equal derivatives) ...
    assert garch_kkt_violation(boundary, np.array([0, 5000.0, 5000.0, 0])) == 0.0
    # ... but not along the constraint, nor fall outward (then the maximum is inside).
    assert garch_kkt_violation(boundary, np.array([0, 5100.0, 5000.0, 0])) == pytest.approx(7.0)
    assert garch_kkt_violation(boundary, np.array([0, -50.0, -50.0, 0])) == pytest.approx(50.0)


@pytest.fixture(scope="module")
def btc_returns() -> np.ndarray:
    candles, _ = load_candles(DATA / "binance_btcusdt_1h.csv")
    return candles.log_returns()


def test_fit_garch_t__btc_maximum_is_integrated_garch(btc_returns):
    """On 31,680 BTC hours the likelihood rises up to alpha + beta = 1; arch's default grid
    start stops at its starting values (log-likelihood -29,934) reporting success. The fit must
    reach the constrained maximum (about -28,803.5) and stay on alpha + beta <= 1."""
    p = fit_garch_t(btc_returns[:31_680])
    assert p.converged
    assert p.integrated
    assert p.persistence <= 1.0
    assert p.loglikelihood > -28_804.0
    assert 2.5 < p.nu < 4.5
    assert math.isinf(p.unconditional_variance) or p.unconditional_variance > 0


def test_garch_rolling__every_btc_fit_converges_and_is_causal(btc_returns, caplog):
    r = btc_returns
    with caplog.at_level(logging.WARNING, logger="dmm.volatility"):
        rolled = GarchT().rolling(r)
    assert "did not converge" not in caplog.text
    assert len(rolled.fits) == len(range(720, len(r) + 1, 720))
    assert all(p.converged and p.persistence <= 1 for _, p in rolled.fits)
    assert np.all(np.isnan(rolled.sigma2[:720]))
    assert np.all(np.isfinite(rolled.sigma2[720:])) and np.all(rolled.sigma2[720:] > 0)
    assert np.all(rolled.nu[720:] > 2)


def test_garch_rolling__forecasts_use_only_past_returns():
    r = simulate_garch_t(2400, OMEGA, ALPHA, BETA, NU, seed=5)
    model = GarchT(refit_every=500, min_obs=500)
    base = model.rolling(r)
    changed = r.copy()
    changed[1700:] *= 3
    after = model.rolling(changed)
    np.testing.assert_array_equal(base.sigma2[:1701], after.sigma2[:1701])
    assert not np.array_equal(base.sigma2[1701:], after.sigma2[1701:])
    assert [k for k, _ in base.fits] == [500, 1000, 1500, 2000]


@pytest.mark.parametrize(
    ("alpha", "beta"),
    [
        # Plain division leaves these at 1 + 1 ulp (as a 2019 BTC fit once did).
        (0.2479201936169357, 0.7520798065138726),
        (0.08351042431179119, 0.9164895760913218),
        (0.3, 0.70001),
        (0.1, 0.9),
    ],
)
def test_project_stationary__never_above_one(alpha, beta):
    a, b = _project_stationary(alpha, beta)
    assert a + b <= 1.0
    assert a == pytest.approx(alpha / max(alpha + beta, 1.0), rel=1e-12)
    assert b == pytest.approx(beta / max(alpha + beta, 1.0), rel=1e-12)
