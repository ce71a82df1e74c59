"""Coverage tests against hand computations and published tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from offchain.risk.coverage_tests import (
    acerbi_szekely_z2,
    bootstrap_shortfall_cut,
    breaches_by_regime,
    christoffersen,
    duration_test,
    durations,
    dynamic_quantile,
    kupiec_pof,
    total_shortfall,
    traffic_light,
    transition_counts,
    z2_null_distribution,
    z2_test,
)


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


def test_kupiec_pof__edge_counts_and_bad_arguments():
    assert kupiec_pof(breaches(200, [5, 50]), 0.01).p_value == pytest.approx(1.0)
    assert kupiec_pof(np.zeros(250, bool), 0.01).statistic == pytest.approx(-500 * math.log(0.99))
    assert kupiec_pof(np.ones(10, bool), 0.01).statistic == pytest.approx(-20 * math.log(0.01))
    with pytest.raises(ValueError, match="p must lie"):
        kupiec_pof(np.zeros(5, bool), 0.0)
    with pytest.raises(ValueError, match="no observations"):
        kupiec_pof(np.zeros(0, bool), 0.01)


# ---------------------------------------------------------------------------------------------
# Christoffersen

SEQUENCE = [0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]


def test_transition_counts__counted_by_hand():
    assert transition_counts(np.array(SEQUENCE, bool)) == (10, 3, 3, 3)


def test_christoffersen__hand_computed_statistics():
    b = np.array(SEQUENCE, bool)
    ind, cc = christoffersen(b, 0.1)
    # by hand: -2 (13 ln(13/19) + 6 ln(6/19) - 10 ln(10/13) - 3 ln(3/13) - 6 ln(1/2)) = 1.3358
    assert ind.statistic == pytest.approx(1.3358, abs=1e-4)
    assert ind.p_value == pytest.approx(stats.chi2.sf(ind.statistic, 1), rel=1e-12)
    assert cc.statistic == pytest.approx(kupiec_pof(b, 0.1).statistic + ind.statistic, rel=1e-12)


def test_christoffersen__clustered_breaches_fail_independence():
    clustered = breaches(2000, [s + i for s in (100, 500, 900, 1300, 1700) for i in range(4)])
    spread = breaches(2000, list(range(50, 2000, 100)))
    assert christoffersen(clustered, 0.01)[0].p_value < 1e-6
    assert christoffersen(spread, 0.01)[0].p_value > 0.4
    with pytest.raises(ValueError, match="two observations"):
        christoffersen(np.zeros(1, bool), 0.01)


# ---------------------------------------------------------------------------------------------
# Dynamic quantile


def test_dynamic_quantile__two_margin_levels_no_lags_is_the_group_formula():
    """With regressors (1, m) and m taking two values, the projection of Hit on X is the group
    means, so DQ = sum_g n_g (rate_g - p)^2 / (p (1 - p)), with 2 degrees of freedom."""
    p = 0.1
    margin = np.array([0.01] * 10 + [0.02] * 10)
    b = breaches(20, [0, 1, 2, 15])  # 3/10 breaches at the low margin, 1/10 at the high one
    by_hand = (10 * (0.3 - p) ** 2 + 10 * (0.1 - p) ** 2) / (p * (1 - p))
    out = dynamic_quantile(b, margin, p, lags=0)
    assert out.statistic == pytest.approx(by_hand, rel=1e-10)
    assert out.p_value == pytest.approx(stats.chi2.sf(by_hand, 2), rel=1e-10)


def test_dynamic_quantile__no_breach_and_a_flat_margin_drop_to_the_constant():
    """No breach, flat margin: every regressor is the constant; DQ = n' p / (1 - p), 1 d.o.f."""
    p = 0.01
    out = dynamic_quantile(np.zeros(104, bool), np.full(104, 0.02), p, lags=4)
    assert out.statistic == pytest.approx(100 * p / (1 - p), rel=1e-10)
    assert out.p_value == pytest.approx(stats.chi2.sf(100 * p / (1 - p), 1), rel=1e-10)


def test_dynamic_quantile__size_on_correct_hits():
    """Independent hits at rate p, whatever the margin: rejected at 5% about 5% of the time."""
    rng = np.random.default_rng(5)
    n, p = 10_000, 0.01
    p_values = [
        dynamic_quantile(rng.random(n) < p, rng.uniform(0.005, 0.05, n), p).p_value
        for _ in range(200)
    ]
    assert 0.02 <= np.mean(np.array(p_values) < 0.05) <= 0.09


def test_dynamic_quantile__power_on_regime_dependent_and_clustered_hits():
    rng = np.random.default_rng(5)
    n, p = 20_000, 0.01
    margin = rng.uniform(0.005, 0.05, n)
    fair = rng.random(n) < p
    # breaches twice as likely at low margins, half as likely at high ones: same average
    skewed = rng.random(n) < np.where(margin < np.median(margin), 1.5 * p, 0.5 * p)
    assert dynamic_quantile(skewed, margin, p).p_value < 1e-6
    # clustered: a breach makes the next hour's far more likely
    clustered = fair.copy()
    clustered[1:] |= fair[:-1] & (rng.random(n - 1) < 0.5)
    assert dynamic_quantile(clustered, margin, p).p_value < 1e-6


def test_dynamic_quantile__rejects_bad_input():
    with pytest.raises(ValueError, match="margins for"):
        dynamic_quantile(np.zeros(10, bool), np.zeros(9), 0.01)
    with pytest.raises(ValueError, match="more than"):
        dynamic_quantile(np.zeros(5, bool), np.zeros(5), 0.01, lags=4)


# ---------------------------------------------------------------------------------------------
# Duration


def test_durations__censoring_at_both_ends():
    d, first, last = durations(np.array([0, 1, 0, 0, 1, 0], bool))
    assert d.tolist() == [2.0, 3.0, 1.0] and first and last
    d, first, last = durations(np.array([1, 0, 0, 1], bool))
    assert d.tolist() == [3.0] and not first and not last


def test_duration_test__exponential_likelihood_by_hand():
    """Uncensored durations D: at shape 1 the rate is a = u / sum(D) and
    ln L = u ln a - a sum(D); the statistic is twice the gain of the best shape over that."""
    from offchain.risk.coverage_tests import _weibull_loglik

    d = np.array([5.0, 12.0, 3.0, 40.0, 7.0])
    u, total = 5, d.sum()
    a = u / total
    null = u * math.log(a) - a * total
    assert _weibull_loglik(1.0, d, False, False) == pytest.approx(null)
    # a sequence that starts and ends with a breach has exactly these durations
    b = np.zeros(int(total) + 1, bool)
    b[np.concatenate(([0], np.cumsum(d).astype(int)))] = True
    assert durations(b)[0].tolist() == d.tolist()
    best = max(_weibull_loglik(x, d, False, False) for x in np.linspace(0.2, 3, 28_001))
    assert duration_test(b).statistic == pytest.approx(2 * (best - null), rel=1e-5)


def test_duration_test__clusters_rejected_memoryless_not():
    rng = np.random.default_rng(3)
    n = 30_000
    memoryless = rng.random(n) < 0.01
    assert duration_test(memoryless).p_value > 0.01
    clustered = np.zeros(n, bool)
    for start in rng.choice(n - 10, 60, replace=False):
        clustered[start : start + rng.integers(2, 6)] = True
    assert duration_test(clustered).p_value < 1e-6
    assert duration_test(np.zeros(100, bool)).p_value == 1.0  # no information


# ---------------------------------------------------------------------------------------------
# Regimes, ES, traffic light, bootstrap


def test_breaches_by_regime__quintiles_of_the_margin():
    margin = np.repeat([0.01, 0.02, 0.03, 0.04, 0.05], 100)
    b = np.zeros(500, bool)
    b[:5] = True  # 5% in the calmest group
    b[450] = True  # 1% in the highest
    groups = breaches_by_regime(b, margin, 0.01)
    assert [g.hours for g in groups] == [100] * 5
    assert [g.rate for g in groups] == [0.05, 0.0, 0.0, 0.0, 0.01]
    assert groups[0].kupiec.p_value < 0.01 and groups[4].kupiec.p_value == pytest.approx(1.0)


def test_acerbi_szekely_z2__by_hand():
    loss = np.array([0.05, 0.01, 0.03])
    var = np.full(3, 0.02)
    es = np.full(3, 0.04)
    # hits at 0 and 2: 1 - (0.05/0.04 + 0.03/0.04) / (3 * 0.1) = 1 - 2 / 0.3
    assert acerbi_szekely_z2(loss, var, es, 0.1) == pytest.approx(1 - 2 / 0.3)
    with pytest.raises(ValueError, match="ES must be positive"):
        acerbi_szekely_z2(loss, var, np.zeros(3), 0.1)


def test_z2_null__centred_on_zero_and_rejects_thick_tails():
    ratios = np.array([0.8, 0.9, 1.0, 1.1, 1.2])  # mean 1
    null = z2_null_distribution(10_000, 0.01, ratios, sims=4000)
    assert abs(null.mean()) < 0.01
    rng = np.random.default_rng(2)
    loss = rng.standard_normal(10_000) * 0.01
    var = np.full(10_000, 0.0233)
    honest_es = np.full(10_000, 0.0267)  # normal ES at 99% for sigma 1%
    assert z2_test(loss, var, honest_es, 0.01, ratios).p_value > 0.01
    assert z2_test(loss * 1.6, var, honest_es, 0.01, ratios).p_value < 0.001


@pytest.mark.parametrize(
    ("count", "zone"), [(0, "green"), (4, "green"), (5, "yellow"), (9, "yellow"), (10, "red")]
)
def test_traffic_light__basel_250_days_at_99(count, zone):
    """The Basel (1996) table: 0-4 exceptions green, 5-9 yellow, 10 or more red."""
    light = traffic_light(np.arange(250) < count, 0.01)
    assert light.zone == zone
    assert light.over_covered == (count == 0 and stats.binom.cdf(0, 250, 0.01) < 0.05)


def test_traffic_light__over_coverage_reported_not_failed():
    light = traffic_light(np.arange(10_000) < 70, 0.01)  # 0.7% where 1% was promised
    assert light.zone == "green" and light.over_covered


def test_bootstrap_shortfall_cut__point_and_interval():
    rng = np.random.default_rng(1)
    n = 5000
    loss_l, loss_s = rng.standard_normal(n) * 0.01, rng.standard_normal(n) * 0.01
    model = np.full(n, 0.025)
    base = np.full(n, 0.02)
    cut = bootstrap_shortfall_cut(loss_l, loss_s, model, base, block=24, reps=300)
    direct = 1 - total_shortfall(loss_l, loss_s, model) / total_shortfall(loss_l, loss_s, base)
    assert cut.cut == pytest.approx(direct)
    assert cut.low <= cut.cut <= cut.high and cut.high - cut.low < 0.5
    same = bootstrap_shortfall_cut(loss_l, loss_s, base, base, reps=50)
    assert (same.cut, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="no shortfall"):
        bootstrap_shortfall_cut(loss_l, loss_s, model, np.full(n, 1.0))
