"""The portfolio backtest's bookkeeping on tiny hand-made cases, the keeper replay through the
guardrails, staleness, the families, and the adversarial search on a constructed gap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from offchain import WAD
from offchain.protocol.portfolio_math import (
    GroupParams,
    PortfolioPosition,
    ShockGuardrails,
    portfolio_margin,
)
from offchain.risk.backtest import christoffersen, kupiec_pof
from offchain.risk.joint_returns import JointHistory
from offchain.risk.portfolio_backtest import (
    SPEC_FAMILY_KEYS,
    Family,
    PreparedBacktest,
    book_margins,
    family_result,
    fresh_rows,
    replay_keeper,
    score,
    standard_families,
    worst_losses,
)
from offchain.risk.portfolio_config import FROZEN_PORTFOLIO, PortfolioConfig, market_name
from offchain.risk.portfolio_search import book_margin, search_adversarial

T0 = 1_600_000_000 // 3600 * 3600


def test_book_margins__formula_eligibility_and_staleness():
    tiered = np.array([[0.02, 0.02], [0.02, 0.02]])
    worst = np.array([[0.001, 0.015], [0.001, 0.015]])
    eligible = np.array([True, True])
    fresh = np.array([True, False])
    out = book_margins(tiered, worst, eligible, fresh, residual=0.1, floor=0.3)
    # fresh: max(L + 0.002, 0.006) capped at T; stale: T
    np.testing.assert_allclose(out, [[0.006, 0.017], [0.02, 0.02]])
    one_position = book_margins(tiered, worst, np.array([False, True]), fresh, 0.1, 0.3)
    np.testing.assert_allclose(one_position[0], [0.02, 0.017])


def test_book_margins__equal_to_the_integer_reference():
    # 1,000,000 USD gross: 12.5 BTC long at 40,000 and 250 ETH short at 2,000
    rates = np.array([[0.01, 0.015]])
    shocks = np.array([[[-300, -400], [300, 400], [-100, 100]]])
    w = np.array([[0.5, -0.5]])
    tiered = rates @ np.abs(w).T
    worst = worst_losses(w, shocks, [3])[3]
    fl = book_margins(tiered, worst, np.array([True]), np.array([True]), 0.07, 0.25)[0, 0]
    btc = PortfolioPosition(
        int(12.5 * WAD), 40_000 * WAD, 5_000 * WAD, 10_000 * WAD, [-300, 300, -100]
    )
    eth = PortfolioPosition(-250 * WAD, 2_000 * WAD, 7_500 * WAD, 15_000 * WAD, [-400, 400, 100])
    params = GroupParams(residual=7 * WAD // 100, floor=WAD // 4, initial_ratio=2 * WAD)
    exact = portfolio_margin([btc, eth], 3, params)
    # scenario 2: BTC -1% on 500k = -5,000; ETH +1% on a 500k short = -5,000: L = 10,000;
    # P = max(10,000 + 7% of 12,500, 25% of 12,500) = 10,875 below T = 12,500
    assert exact.worst_loss == 10_000 * WAD
    assert exact.maintenance == 10_875 * WAD
    assert fl * 1_000_000 == pytest.approx(exact.maintenance / WAD, rel=1e-12)


def test_replay_keeper__clamps_steps_and_holds_between_updates():
    g = ShockGuardrails(max_shock=(1000, 1000), max_step=(100, 100), heartbeat=7200)
    proposed = np.array(
        [
            [[0, 0], [0, 0]],  # not ready
            [[-300, -200], [300, 200]],  # first update: bounds only
            [[-600, -250], [600, 250]],  # BTC steps by 300: clamped to 100
            [[-600, -250], [600, 250]],  # not ready: the last signed shocks hold
            [[-5000, -250], [600, 250]],  # beyond the bound and the step
        ]
    )
    ready = np.array([False, True, True, False, True])
    r = replay_keeper(proposed, ready, g)
    assert r.pushed.tolist() == [False, True, True, False, True]
    assert r.shocks[0].tolist() == [[0, 0], [0, 0]]
    assert r.shocks[1].tolist() == [[-300, -200], [300, 200]]
    assert r.shocks[2].tolist() == [[-400, -250], [400, 250]]
    assert r.shocks[3].tolist() == r.shocks[2].tolist()
    assert r.shocks[4].tolist() == [[-500, -250], [500, 250]]
    assert (r.clamped_updates, r.clamped_shocks) == (2, 4)


def test_fresh_rows__stale_after_the_heartbeat_without_updates():
    t = np.array([0, 3600, 7200, 18000, 21600]) + T0
    pushed = np.array([True, True, False, False, True])
    assert fresh_rows(t, pushed, 7200).tolist() == [True, True, True, False, True]
    assert fresh_rows(t, np.zeros(5, dtype=bool), 7200).tolist() == [False] * 5


def test_family_result__hand_counted():
    loss = np.array([[0.02, 0.0], [0.0, 0.05], [0.01, 0.01]])
    margin = np.array([[0.01, 0.01], [0.02, 0.02], [0.02, 0.02]])
    tiered = np.full((3, 2), 0.04)
    f = family_result("x", loss, margin, tiered, 0.01)
    assert (f.books, f.hours) == (2, 3)
    assert f.breach_rate == pytest.approx(2 / 6)
    assert f.breach_rate_max == pytest.approx(1 / 3)
    assert f.total_shortfall == pytest.approx((0.01 + 0.03) / 2)
    assert f.tiered_total_shortfall == pytest.approx((0.0 + 0.01) / 2)
    assert f.tiered_breach_rate == pytest.approx(1 / 6)
    assert f.avg_margin_saving_vs_tiered == pytest.approx((0.75 * 2 + 0.5 * 4) / 6)
    b0, b1 = np.array([True, False, False]), np.array([False, True, False])
    kup = [kupiec_pof(b0, 0.01).p_value, kupiec_pof(b1, 0.01).p_value]
    ind = [christoffersen(b0, 0.01)[0].p_value, christoffersen(b1, 0.01)[0].p_value]
    assert f.kupiec_p == pytest.approx(np.median(kup))
    assert f.christoffersen_p_min == pytest.approx(min(ind))
    assert list(f.spec_dict())[:6] == list(SPEC_FAMILY_KEYS)


def tiny_prepared(fresh: list[bool]) -> PreparedBacktest:
    """Two markets, four hours, two scenarios: every number chosen by hand."""
    t = T0 + 3600 * np.arange(4)
    close = np.array([[100.0, 10.0], [101.0, 9.0], [99.0, 9.5], [99.0, 9.5]])
    history = JointHistory(("BTC/USDT", "ETH/USDT"), t, close, np.ones((4, 2)), np.zeros((4, 2)))
    config = PortfolioConfig(
        n_scenarios=2,
        residual=0.1,
        floor=0.2,
        initial_ratio=2.0,
        max_shock_bps=(),
        default_max_shock_bps=5000,
        max_step_bps=5000,
    )
    moves = np.full((4, 2), np.nan)
    moves[:-1] = close[1:] / close[:-1] - 1
    shocks = np.array([[[-200, -300], [200, 300]]] * 4)
    from offchain.risk.portfolio_backtest import KeeperReplay

    replay = KeeperReplay(shocks, np.ones(4, dtype=bool), 0, 0)
    rates = np.array([[0.02, 0.03]] * 4)
    ready = np.ones(4, dtype=bool)
    return PreparedBacktest(history, config, rates, moves, {2: replay}, np.array(fresh), ready, [])


def test_score__tiny_book_by_hand():
    prep = tiny_prepared([True, False, True, True])
    rows = prep.rows()
    assert rows.tolist() == [0, 1, 2]  # the last hour has no next close
    pair = Family("pair", np.array([[0.5, -0.5]]), ("long A short B",))
    out = score(prep, [pair], rows, residual=0.1, floor=0.2)["pair"]
    loss, margin, tiered = (x[:, 0] for x in out)
    # T = 0.5 * 2% + 0.5 * 3% = 2.5%; scenarios: A -2% / B -3% -> the pair gains 0.5%,
    # the mirror loses 0.5%: L = 0.5%, P = max(0.5% + 0.25%, 0.5%) = 0.75%
    np.testing.assert_allclose(tiered, [0.025] * 3)
    np.testing.assert_allclose(margin, [0.0075, 0.025, 0.0075])  # hour 1 is stale: T
    # hour 0: A +1%, B -10% -> long A gains 0.5%, short B gains 5%; hour 1: A -1.98%,
    # B +5.56% -> the book loses 3.77% (above its tiered 2.5%: a breach); hour 2: flat
    hour1 = -(0.5 * (99 / 101 - 1) - 0.5 * (9.5 / 9 - 1))
    np.testing.assert_allclose(loss, [-0.055, hour1, 0.0], atol=1e-12)
    # the outright A long keeps its tiered rate
    outright = Family("outright", np.array([[1.0, 0.0]]), ("long A",))
    o = score(prep, [outright], rows, residual=0.1, floor=0.2)["outright"]
    np.testing.assert_allclose(o[1][:, 0], [0.02] * 3)


def test_standard_families__shapes_and_gross():
    fams = {f.name: f for f in standard_families(["BTC", "ETH", "SOL"])}
    assert list(fams) == ["outright", "hedged_pair", "random", "concentrated", "near_outright"]
    assert fams["outright"].weights.shape == (6, 3) and not fams["outright"].eligible.any()
    np.testing.assert_allclose(fams["hedged_pair"].weights, [[0.5, -0.5, 0], [-0.5, 0.5, 0]])
    assert fams["random"].weights.shape == (64, 3) and fams["random"].eligible.all()
    assert fams["concentrated"].weights.shape == (24, 3)
    assert np.isclose(np.abs(fams["near_outright"].weights).max(), 0.99)
    for f in fams.values():
        np.testing.assert_allclose(np.abs(f.weights).sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="gross weight 1"):
        Family("bad", np.array([[0.5, 0.2]]), ("x",))


def test_search_adversarial__finds_the_gap_between_axis_scenarios():
    # independent markets, scenarios on the axes only (each market alone at its 99% move):
    # a book split evenly between them loses sqrt(2) times its worst scenario
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40_000, 2))
    pool = np.concatenate((x, -x))
    sigma = np.array([0.002, 0.002])
    q = 2.326 * 0.002 * 1e4
    shocks = np.array([[-q, 0], [q, 0], [0, -q], [0, q]]).round().astype(np.int64)
    rates = np.array([0.5, 0.5])  # the tiered sum never binds
    res = search_adversarial(pool, sigma, shocks, rates, 0.0, 0.0, ["A", "B"])
    assert np.abs(res.weights) == pytest.approx([0.5, 0.5], abs=0.03)
    assert res.ratio == pytest.approx(math.sqrt(2), rel=0.03)
    assert res.true_loss == pytest.approx(2.326 * 0.002 / math.sqrt(2), rel=0.03)
    margin, tiered, worst = book_margin(res.weights, shocks, rates, 0.0, 0.0)
    assert res.margin == pytest.approx(float(margin[0])) == pytest.approx(float(worst[0]))
    assert res.tiered == pytest.approx(float(tiered[0])) == 0.5
    # with a scenario on the diagonal the gap closes
    d = q / math.sqrt(2)
    diag = np.vstack((shocks, [[-d, -d], [d, d], [-d, d], [d, -d]])).round().astype(np.int64)
    closed = search_adversarial(pool, sigma, diag, rates, 0.0, 0.0, ["A", "B"])
    assert closed.ratio < 1.1


def test_portfolio_config__names_and_wad():
    assert market_name("binance_btcusdt_1h_2018_2023") == "BTC"
    assert market_name("ETH/USDT") == "ETH"
    assert market_name("sol") == "SOL"
    params = FROZEN_PORTFOLIO.group_params()
    assert params.residual == round(FROZEN_PORTFOLIO.residual * WAD)
    g = FROZEN_PORTFOLIO.guardrails(["BTC/USDT", "XYZ"])
    assert g.max_shock[1] == FROZEN_PORTFOLIO.default_max_shock_bps
