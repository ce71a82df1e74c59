"""Anti-procyclicality tools and the measures of margin swings, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from offchain.risk.procyclicality import (
    buffer_release,
    increases,
    lookback_floor,
    max_rise,
    peak_to_trough,
    rise_budget,
    stress_rank,
    stressed_weight,
)


def test_max_rise__largest_rise_within_a_window():
    m = np.array([1.0, 1.0, 2.0, 1.0, 3.0, 0.5])
    assert max_rise(m, window=2) == 2.0  # 3 - min(2, 1, 3)
    assert max_rise(m, window=1) == 2.0
    assert max_rise(np.array([1.0, 1.5, 2.0, 2.5, 3.0]), window=24) == 2.0  # spread rise counts
    assert max_rise(np.array([3.0, 2.0, 1.0])) == 0.0
    with pytest.raises(ValueError, match="window"):
        max_rise(m, window=0)


def test_increases__one_five_and_thirty_days():
    m = np.full(24 * 40, 0.01)
    m[100:] = 0.02  # one step of a point
    m[100 + 24 * 3 :] = 0.04  # two more points three days later
    out = increases(m)
    assert out["max_increase_1d"] == pytest.approx(0.02)
    assert out["max_increase_5d"] == pytest.approx(0.03)
    assert out["max_increase_30d"] == pytest.approx(0.03)


def test_peak_to_trough__ratio_and_bad_input():
    assert peak_to_trough(np.array([0.01, 0.05, 0.02])) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="positive"):
        peak_to_trough(np.array([0.0, 0.01]))


def test_stress_rank__share_of_the_reference_at_or_below():
    sigma = np.array([1.0, 2.0, 3.0, 4.0, 2.5, 5.0, 0.5])
    ranks = stress_rank(sigma, np.array([3, 5]), window=4, min_obs=2)
    assert np.isnan(ranks[:3]).all()  # before the first anchor
    # anchor 3: reference {1, 2, 3, 4}; 4 -> 4/4, 2.5 -> 2/4
    assert ranks[3] == 1.0 and ranks[4] == 0.5
    # anchor 5: reference {3, 4, 2.5, 5}; 5 -> 1, 0.5 -> 0
    assert ranks[5] == 1.0 and ranks[6] == 0.0


def test_buffer_release__full_buffer_calm_none_in_stress():
    out = buffer_release(np.array([0.01, 0.01, 0.01]), np.array([0.0, 0.5, 1.0]), 0.5)
    np.testing.assert_allclose(out, [0.015, 0.0125, 0.01])
    with pytest.raises(ValueError, match="non-negative"):
        buffer_release(np.ones(1), np.ones(1), -0.1)


def test_stressed_weight_and_lookback_floor():
    np.testing.assert_allclose(stressed_weight(np.array([0.01]), np.array([0.05]), 0.25), [0.02])
    np.testing.assert_allclose(
        lookback_floor(np.array([0.01, 0.04, 0.02]), np.array([0.03, 0.03, np.nan])),
        [0.03, 0.04, 0.02],
    )
    with pytest.raises(ValueError, match="stressed weight"):
        stressed_weight(np.ones(1), np.ones(1), 1.5)


def test_rise_budget__staircase_after_a_shock():
    x = np.array([0.01, 0.08, 0.08, 0.08, 0.08])
    # window 2: the rise over any two hours is at most 0.03
    np.testing.assert_allclose(rise_budget(x, 0.03, window=2), [0.01, 0.04, 0.04, 0.07, 0.07])
    out = rise_budget(np.concatenate((np.full(30, 0.01), np.full(100, 0.2))), 0.03, window=24)
    assert max_rise(out, 24) == pytest.approx(0.03)
    assert out[-1] == pytest.approx(0.16)  # 0.01 and five steps of 0.03 in 100 hours


def test_rise_budget__falls_freely_and_skips_nan():
    x = np.array([np.nan, 0.05, 0.01, np.nan, 0.06])
    out = rise_budget(x, 0.02, window=3)
    assert np.isnan(out[0]) and np.isnan(out[3])
    np.testing.assert_allclose(out[[1, 2, 4]], [0.05, 0.01, 0.03])
    with pytest.raises(ValueError, match="budget"):
        rise_budget(x, 0.0)
