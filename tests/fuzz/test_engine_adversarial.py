"""Adversarial scenarios on titanoboa (loops too long for ape's local chain)."""

from __future__ import annotations

import boa
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import LIQUIDATION_FEE, MARKET_BTC, PRICES, WAD, deploy_system
from tests.fuzz.engine_model import (
    DEEP_UNDERWATER,
    DUST_NOTIONAL,
    LIQUIDATION_BUFFER,
    EngineModel,
    Health,
)

USDC = 10**6
BTC = PRICES[MARKET_BTC] * WAD

_BASE: list = []


def base():
    """One deployment with funded maker, trader and liquidator; tests run inside anchors."""
    if not _BASE:
        s = deploy_system()
        actors = [boa.env.generate_address(n) for n in ("trader", "maker", "liquidator")]
        for who in actors:
            s.fund(who, 1_000_000 * USDC)
        _BASE.extend([s, *actors])
    return _BASE


base()


def test_settle_trade__dust_round_trips_gain_nothing():
    s, trader, maker, _ = base()
    e = s.engine
    start = {w: (e.collateral_of(w, 0), e.account_health(w, 0)[0]) for w in (trader, maker)}
    # Prices that are not multiples of 1 wei-of-size: every fill rounds.
    prices = [BTC + 123_456_789, BTC - 987_654_321, BTC + WAD // 3, BTC - 1]
    for i in range(1_000):
        price = prices[i % len(prices)]
        size = 1 + i % 3
        s.trade(MARKET_BTC, maker, 0, trader, 0, size, price)  # trader buys dust
        s.trade(MARKET_BTC, maker, 0, trader, 0, -size, prices[(i + 1) % len(prices)])  # sells
    for who in (trader, maker):
        assert e.position(who, 0, MARKET_BTC) == (0, 0)
        collateral, equity = e.collateral_of(who, 0), e.account_health(who, 0)[0]
        assert collateral <= start[who][0]
        assert equity <= start[who][1]
    # Together they lost the rounding: the engine never pays out more than came in.
    assert sum(e.collateral_of(w, 0) for w in (trader, maker)) <= sum(v[0] for v in start.values())


def test_withdraw__pumped_price_long_gets_no_more_than_collateral_plus_realised():
    s, _, _, _ = base()
    e = s.engine
    long, short = boa.env.generate_address("colluding_long"), boa.env.generate_address("colluder")
    s.fund(long, 10_000 * USDC)
    s.fund(short, 10_000 * USDC)
    s.trade(MARKET_BTC, short, 0, long, 0, WAD, BTC)
    s.set_price(MARKET_BTC, 10 * BTC)  # the feed is pumped 10x
    assert e.account_health(long, 0)[0] > 500_000 * WAD  # paper profit
    # Closing against the colluder at the pumped price would sink the colluder: refused.
    with boa.reverts("engine: below maintenance margin"):
        s.trade(MARKET_BTC, short, 0, long, 0, -WAD, 10 * BTC)
    # The paper profit is not withdrawable: at most the deposited collateral (no realised PnL).
    collateral = e.collateral_of(long, 0)
    with boa.reverts("engine: insufficient collateral"), boa.env.prank(long):
        e.withdraw(0, collateral // 10**12 + 1)
    with boa.env.prank(long):
        e.withdraw(0, collateral // 10**12)
    assert s.token.balanceOf(long) == 10_000 * USDC


def test_funding__365_days_untouched_no_overflow_no_money_created():
    s, trader, maker, _ = base()
    e = s.engine
    s.trade(MARKET_BTC, maker, 0, trader, 0, 10 * WAD, BTC)
    s.update_risk(MARKET_BTC, 2 * WAD, 10**12)  # the registry's bound: 1e-6 per second
    e.poke(MARKET_BTC)
    before = {w: e.account_health(w, 0)[0] for w in (trader, maker)}
    boa.env.time_travel(seconds=365 * 86_400)
    s.set_price(MARKET_BTC, BTC)
    after = {w: e.account_health(w, 0)[0] for w in (trader, maker)}
    owed = 10 * 10**12 * BTC // WAD * 365 * 86_400  # size x rate x price x time
    assert before[trader] - after[trader] >= owed  # the long paid (rounded against it)
    assert after[maker] - before[maker] <= owed  # the short received no more
    assert sum(after.values()) <= sum(before.values())
    # Settling still works: the long is backstopped, the short can close and withdraw.
    e.backstop(trader, 0)
    balance = s.token.balanceOf(e.address) * 10**12
    equities = e.account_health(maker, 0)[0] + e.collateral_of(e.address, 0)
    fund_positions = e.position(e.address, 0, MARKET_BTC)
    assert fund_positions[0] == 10 * WAD
    assert balance + e.bad_debt() >= equities + (10 * BTC - fund_positions[1])


@given(drop_bp=st.integers(150, 400), requested_bp=st.integers(1, 20_000))
def test_liquidate__never_more_than_the_rule(drop_bp, requested_bp):
    s, _, maker, liquidator = base()
    e = s.engine
    with boa.env.anchor():
        who = boa.env.generate_address("victim")
        s.fund(who, 20_000 * USDC)
        s.trade(MARKET_BTC, maker, 0, who, 0, 7 * WAD, BTC)
        s.set_price(MARKET_BTC, BTC * (10_000 - drop_bp) // 10_000)
        equity, maintenance, _ = e.account_health(who, 0)
        if equity >= maintenance:
            return
        requested = 7 * WAD * requested_bp // 10_000 or 1
        price, _ = e.mark_price(MARKET_BTC)
        notional = -(-7 * WAD * price // WAD)
        mm, _ = s.registry.margin_requirements(MARKET_BTC, notional)
        h = Health(equity, maintenance, 0, 0, 7 * WAD, price, notional, mm)
        model = EngineModel(e.address, 10**12, None, None)
        cap = model.max_close(h, 7 * WAD, price, LIQUIDATION_FEE)
        expected = min(requested, cap)
        if expected < 7 * WAD and (7 * WAD - expected) * price // WAD < DUST_NOTIONAL:
            with boa.env.prank(liquidator), boa.reverts("engine: remainder below dust"):
                e.liquidate(who, 0, MARKET_BTC, requested, 0)
            return
        with boa.env.prank(liquidator):
            closed = e.liquidate(who, 0, MARKET_BTC, requested, 0)
        assert closed == expected
        if closed == cap and cap < 7 * WAD and equity * WAD >= maintenance * DEEP_UNDERWATER:
            after, after_mm, _ = e.account_health(who, 0)
            assert after * WAD >= after_mm * (WAD + LIQUIDATION_BUFFER) - WAD
            assert not e.is_liquidatable(who, 0)
