"""Funding in maintenance: the coverage measure, breach counts and the reserve rule by hand,
and the join of a backtest with a replayed funding history."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from offchain.risk import funding_reserve
from offchain.risk.backtest import BacktestResult
from offchain.risk.funding_history import FundingHistory, replay_reference, settlement_intervals
from offchain.risk.funding_reserve import (
    MarketHours,
    breach_counts,
    choose_reserve_seconds,
    coverage,
    coverage_parts,
    flip_share,
    join,
    measure_at_most,
    reserve_to_margin,
    worst_instant_coverage,
)

H = 3600
T0 = 1_600_000_000 // (8 * H) * (8 * H)


def test_doctests__run() -> None:
    assert doctest.testmod(funding_reserve).failed == 0


@pytest.mark.parametrize(
    ("a", "b", "x", "expected"),
    [
        (1.0, 1.0, 1.0, 1.0),  # flat at the level: all of it
        (1.0, 1.0, 0.5, 0.0),
        (0.0, 4.0, 1.0, 0.25),  # rising: the first quarter
        (4.0, 0.0, 1.0, 0.25),  # falling: the last quarter
        (0.0, 4.0, 5.0, 1.0),
        (0.0, 4.0, -1.0, 0.0),
    ],
)
def test_measure_at_most__by_hand(a: float, b: float, x: float, expected: float) -> None:
    got = measure_at_most(np.array([a]), np.array([b]), x)[0]
    assert got == pytest.approx(expected)


def test_coverage_parts__paying_and_covered_measures() -> None:
    # hour 1: pays 1 all hour, reserve 1 -> covered; hour 2: from 0 to 2, reserve 1 -> half;
    # hour 3: from -1 to 1 (pays half the hour), reserve 0 -> none; hour 4 receives.
    a = np.array([1.0, 0.0, -1.0, -1.0])
    b = np.array([1.0, 2.0, 1.0, -2.0])
    reserve = np.array([1.0, 1.0, 0.0, 0.0])
    covered, paying = coverage_parts(a, b, reserve)
    assert paying == pytest.approx(1 + 1 + 0.5)
    assert covered == pytest.approx(1 + 0.5)


def test_breach_counts__by_hand() -> None:
    loss = np.array([0.010, 0.0095, 0.012, 0.001])
    margin = np.full(4, 0.0100)
    paid = np.array([0.0, 0.0010, -0.0030, 0.0])
    c = breach_counts(loss, margin, paid, reserve=np.array([0.0, 0.0006, 0.0, 0.0]))
    assert (c.hours, c.price, c.with_funding, c.explained, c.saved) == (4, 1, 1, 1, 1)
    assert c.with_reserve == 0  # 0.0095 + 0.0010 <= 0.0100 + 0.0006
    assert c.explained_share == 1.0


def market(rate: list[float], a: list[float], b: list[float]) -> MarketHours:
    n = len(rate)
    return MarketHours(
        "X",
        1,
        np.arange(n, dtype=np.int64) * H,
        np.full(n, 0.01),
        np.zeros(n),
        np.zeros(n),
        np.array(rate),
        np.array(a),
        np.array(b),
    )


def test_reserve_rule__smallest_step_reaching_the_target() -> None:
    r = 1e-8
    # Constant for three hours; in the fourth the next hour's rate is 3x.
    m = market([r] * 4, [r * H] * 4, [r * H] * 3 + [3 * r * H])
    # Long side: three hours covered by one hour of reserve, the fourth needs 3 h at every
    # instant; with 2 h of reserve it is covered while F(u) = (1 + 2u) r H <= 2 r H: u <= 1/2.
    assert coverage([m], H) == pytest.approx(3 / 4)
    assert coverage([m], 2 * H) == pytest.approx(3.5 / 4)
    assert coverage([m], 3 * H) == pytest.approx(1.0)
    assert worst_instant_coverage([m], 2 * H) == pytest.approx(3 / 4)
    # 1.75 h covers the fourth hour while u <= 3/8: (3 + 3/8) / 4 = 0.84375.
    assert choose_reserve_seconds([m], target=0.84, step=900) == (6300, True)
    assert choose_reserve_seconds([m], target=0.99, step=900) == (3 * H, True)


def test_reserve_rule__a_sign_flip_is_never_covered() -> None:
    r = 1e-8
    # The long receives in hour 1 (rate < 0) but the next hour's rate is positive.
    m = market([-r, r], [-r * H, r * H], [r * H, r * H])
    # paying: the long half of hour 1 (no reserve: a flip) and all of hour 2, the short the
    # first half of hour 1
    assert flip_share([m]) == pytest.approx(0.5 / 2.0)
    assert choose_reserve_seconds([m], target=0.99, step=3600, top=4 * H) == (4 * H, False)
    # the short side pays in the first half of hour 1 and carries a reserve there
    assert coverage([m], 4 * H) == pytest.approx((1.0 + 0.5) / (1.5 + 0.5))


def test_reserve_to_margin__average_reserve_over_average_margin() -> None:
    m = market([1e-8, 0.0, -2e-8], [0.0] * 3, [0.0] * 3)
    assert reserve_to_margin([m], 3600) == pytest.approx((1e-8 + 2e-8) * 3600 / 0.02)


def fake_backtest(times: np.ndarray, horizon: int = 1) -> BacktestResult:
    n = len(times)
    return BacktestResult(
        asset="X",
        hours=n,
        confidence=0.99,
        horizon=horizon,
        models={},
        recommended="fhs",
        times=times,
        close=np.ones(n),
        loss_long=np.linspace(0, 0.02, n),
        loss_short=-np.linspace(0, 0.02, n),
        margins={"recommended": np.full(n, 0.01)},
    )


def test_join__funding_at_the_update_and_before_the_next() -> None:
    t = np.array([T0, T0 + 8 * H, T0 + 16 * H], dtype=np.int64)
    h = FundingHistory("X", t, np.array([0.0008, 0.0016, 0.0]), settlement_intervals(t))
    replay = replay_reference(h, bound=10**12)
    # Backtest hours from 2 h before the first settlement: only those inside the replay whose
    # next hour's horizon also fits in it (up to T0 + 14 h) are kept.
    times = np.arange(T0 - 2 * H, T0 + 16 * H, H, dtype=np.int64)
    m = join(fake_backtest(times), replay)
    assert m.times.tolist() == list(range(T0, T0 + 15 * H, H))
    first, second = 0.0008 / (8 * H), 0.0016 / (8 * H)
    assert m.rate == pytest.approx([first] * 8 + [second] * 7, rel=1e-6)
    assert m.paid_at_update[:8] == pytest.approx(np.full(8, first * H), rel=1e-6)
    # the hour before the T0 + 8 h update: the next hour runs at the new rate
    assert m.paid_before_next[7] == pytest.approx(second * H, rel=1e-6)
    assert m.paid_before_next[6] == pytest.approx(first * H, rel=1e-6)
    assert m.window(T0 + H, T0 + 3 * H).times.tolist() == [T0 + H, T0 + 2 * H]
    sides = {s[0]: s[1:] for s in m.sides()}
    assert sides["short"][1] == pytest.approx(-m.paid_at_update)
    assert (sides["short"][3] == 0).all() and (sides["long"][3] > 0).all()


def test_join__refuses_a_backtest_outside_the_history() -> None:
    t = np.array([T0, T0 + 8 * H], dtype=np.int64)
    replay = replay_reference(
        FundingHistory("X", t, np.array([0.0001, 0.0001]), settlement_intervals(t)), 10**12
    )
    with pytest.raises(ValueError, match="no backtest hour inside"):
        join(fake_backtest(np.array([T0 - 100 * H], dtype=np.int64)), replay)
