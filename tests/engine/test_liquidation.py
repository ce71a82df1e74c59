"""liquidate, backstop, poke, funding, and the views bots use."""

import ape

from tests.conftest import MARKET_BTC, WAD
from tests.engine.conftest import DEPOSIT, LIQUIDATION_FEE, USDC, feed_answer


def open_long(trade, maker, trader, size=WAD):
    trade(maker, trader, size)


def test_is_liquidatable__equity_equal_to_maintenance_is_not(
    engine, token, trader, maker, fund, trade, feed
):
    # Long 1 BTC at 60k with 11k: at 50k equity 1,000 == maintenance 2% x 50k.
    fund(trader, 11_000 * USDC)
    fund(maker, 100_000 * USDC)
    trade(maker, trader, WAD)
    feed.set_answer(feed_answer(50_000), sender=maker)
    equity, maintenance, _ = engine.account_health(trader, 0)
    assert equity == maintenance == 1_000 * WAD
    assert not engine.is_liquidatable(trader, 0)
    feed.set_answer(feed_answer(50_000) - 1, sender=maker)
    assert engine.is_liquidatable(trader, 0)


def test_liquidate__partial_restores_buffered_health(
    engine, trader, maker, liquidator, funded, trade, feed
):
    open_long(trade, maker, trader)
    feed.set_answer(feed_answer(51_000), sender=maker)  # equity 1,000 < maintenance 1,020
    assert engine.users_to_liquidate(0, 10) == [(trader.address, 0)]
    closed = engine.liquidate.call(trader, 0, MARKET_BTC, WAD, 0, sender=liquidator)
    receipt = engine.liquidate(trader, 0, MARKET_BTC, WAD, 0, sender=liquidator)
    assert 0 < closed < WAD
    size, _ = engine.position(trader, 0, MARKET_BTC)
    assert size == WAD - closed
    assert engine.position(liquidator, 0, MARKET_BTC)[0] == closed
    equity, maintenance, _ = engine.account_health(trader, 0)
    assert equity >= maintenance * 11 // 10  # the rule's 10% buffer, after the penalty
    [log] = receipt.decode_logs(engine.Liquidation)
    penalty = -(-closed * 51_000 * LIQUIDATION_FEE // WAD)  # rounded up (notional exact here)
    assert log.penalty in (penalty, penalty + 1)
    assert log.liquidator_reward == log.penalty // 2
    assert engine.insurance_fund() == log.penalty - log.liquidator_reward


def test_liquidate__caps_at_rule_even_if_more_requested(
    engine, trader, maker, liquidator, funded, trade, feed
):
    open_long(trade, maker, trader)
    feed.set_answer(feed_answer(51_000), sender=maker)
    closed = engine.liquidate.call(trader, 0, MARKET_BTC, 10 * WAD, 0, sender=liquidator)
    assert closed < WAD
    small = engine.liquidate.call(trader, 0, MARKET_BTC, closed // 2, 0, sender=liquidator)
    assert small == closed // 2


def test_liquidate__deep_underwater_closes_all(
    engine, trader, maker, liquidator, funded, trade, feed
):
    open_long(trade, maker, trader)
    feed.set_answer(feed_answer(50_400), sender=maker)  # equity 400 < 50% of 1,008
    assert engine.liquidate.call(trader, 0, MARKET_BTC, 2 * WAD, 0, sender=liquidator) == WAD


def test_liquidate__works_while_paused_and_stale(
    engine, owner, trader, maker, liquidator, funded, trade, feed, chain
):
    open_long(trade, maker, trader)
    feed.set_answer(feed_answer(50_400), sender=maker)
    engine.poke(MARKET_BTC, sender=liquidator)  # stores the last good price
    engine.pause(sender=owner)
    chain.mine(deltatime=7200)  # the feed is now stale: the last good price applies
    assert engine.mark_price(MARKET_BTC) == (50_400 * WAD, False)
    engine.liquidate(trader, 0, MARKET_BTC, WAD, 0, sender=liquidator)
    assert engine.position(trader, 0, MARKET_BTC) == (0, 0)


def test_liquidate__penalty_capped_at_equity_insurance_never_pays(
    engine, token, trader, maker, liquidator, funded, trade, feed, stranger
):
    # Long 1 BTC at 60k with 10k: at 50,010 equity is 10 USD, far below a 125 USD penalty.
    open_long(trade, maker, trader)
    token.mint(stranger, 1_000 * USDC, sender=stranger)
    token.approve(engine, 1_000 * USDC, sender=stranger)
    engine.fund_insurance(1_000 * USDC, sender=stranger)
    feed.set_answer(feed_answer(50_010), sender=maker)
    equity, _, _ = engine.account_health(trader, 0)
    assert equity == 10 * WAD
    receipt = engine.liquidate(trader, 0, MARKET_BTC, WAD, 0, sender=liquidator)
    [log] = receipt.decode_logs(engine.Liquidation)
    assert log.size == -WAD  # deep underwater: closed whole
    assert log.penalty == equity - 1  # not ceil(0.25% x 50,010)
    after, _, _ = engine.account_health(trader, 0)
    assert 0 <= after <= 1  # nothing left to backstop: the fund paid nothing
    assert engine.insurance_fund() == 1_000 * WAD + log.penalty - log.liquidator_reward
    assert engine.bad_debt() == 0


def test_liquidate__negative_equity_goes_to_the_backstop(
    engine, trader, maker, liquidator, funded, trade, feed
):
    """Liquidating a negative account closed it whole and left it flat at -1,000 USD of
    collateral with the loss nowhere: no insurance draw, no bad debt, out of the active list.
    It now has to be backstopped, which books the loss."""
    open_long(trade, maker, trader)
    feed.set_answer(feed_answer(49_000), sender=maker)  # equity -1,000
    with ape.reverts("engine: negative equity, backstop the account"):
        engine.liquidate(trader, 0, MARKET_BTC, WAD, 0, sender=liquidator)
    engine.backstop(trader, 0, sender=liquidator)
    assert engine.collateral_of(trader, 0) == 0
    assert engine.bad_debt() == 1_000 * WAD
    assert engine.markets_of(trader, 0) == []


def test_liquidate__remainder_below_dust(engine, trader, maker, liquidator, funded, trade, feed):
    open_long(trade, maker, trader)
    feed.set_answer(feed_answer(50_400), sender=maker)  # deep underwater: all may go
    leave = 10 * WAD * WAD // (50_400 * WAD) - 1  # worth just under 10 USD
    with ape.reverts("engine: remainder below dust"):
        engine.liquidate(trader, 0, MARKET_BTC, WAD - leave, 0, sender=liquidator)


def test_liquidate__zero_size(engine, trader, liquidator):
    with ape.reverts("engine: zero size"):
        engine.liquidate(trader, 0, MARKET_BTC, 0, 0, sender=liquidator)


def test_liquidate__insurance_account(engine, liquidator):
    with ape.reverts("engine: insurance account"):
        engine.liquidate(engine, 0, MARKET_BTC, WAD, 0, sender=liquidator)


def test_liquidate__self_liquidation(engine, trader):
    with ape.reverts("engine: self liquidation"):
        engine.liquidate(trader, 0, MARKET_BTC, WAD, 0, sender=trader)


def test_liquidate__unknown_market(engine, trader, liquidator):
    with ape.reverts("engine: unknown market"):
        engine.liquidate(trader, 0, 9, WAD, 0, sender=liquidator)


def test_liquidate__account_healthy(engine, trader, maker, liquidator, funded, trade):
    open_long(trade, maker, trader)
    with ape.reverts("engine: account healthy"):
        engine.liquidate(trader, 0, MARKET_BTC, WAD, 0, sender=liquidator)


def test_liquidate__no_position(
    engine, add_markets, trader, maker, liquidator, funded, trade, feed
):
    add_markets([2])
    open_long(trade, maker, trader)
    feed.set_answer(feed_answer(51_000), sender=maker)
    with ape.reverts("engine: no position"):
        engine.liquidate(trader, 0, 2, WAD, 0, sender=liquidator)


def test_liquidate__liquidator_initial_margin(
    engine, trader, maker, liquidator, funded, trade, feed
):
    open_long(trade, maker, trader)
    feed.set_answer(feed_answer(50_400), sender=maker)
    # Subaccount 5 of the liquidator holds no collateral.
    with ape.reverts("engine: liquidator below initial margin"):
        engine.liquidate(trader, 0, MARKET_BTC, WAD, 5, sender=liquidator)


def test_backstop__insurance_covers_then_bad_debt(
    engine, token, trader, maker, funded, trade, feed, stranger
):
    open_long(trade, maker, trader)
    token.mint(stranger, 1_000 * USDC, sender=stranger)
    token.approve(engine, 1_000 * USDC, sender=stranger)
    engine.fund_insurance(1_000 * USDC, sender=stranger)
    feed.set_answer(feed_answer(48_000), sender=maker)  # equity -2,000
    assert engine.account_health(trader, 0)[0] == -2_000 * WAD
    receipt = engine.backstop(trader, 0, sender=stranger)
    assert engine.position(trader, 0, MARKET_BTC) == (0, 0)
    assert engine.position(engine, 0, MARKET_BTC) == (WAD, 48_000 * WAD)
    assert engine.collateral_of(trader, 0) == 0
    assert engine.insurance_fund() == 0
    assert engine.bad_debt() == 1_000 * WAD
    [log] = receipt.decode_logs(engine.Backstop)
    assert (log.covered, log.bad_debt) == (1_000 * WAD, 1_000 * WAD)
    assert engine.open_interest(MARKET_BTC) == WAD
    assert engine.accounts_with_positions_count() == 1  # the maker; the fund is not listed


def test_backstop__insurance_account(engine, stranger):
    with ape.reverts("engine: insurance account"):
        engine.backstop(engine, 0, sender=stranger)


def test_backstop__above_backstop_threshold(engine, trader, maker, funded, trade, feed, stranger):
    open_long(trade, maker, trader)
    feed.set_answer(feed_answer(51_000), sender=maker)  # liquidatable but equity > 0
    with ape.reverts("engine: above backstop threshold"):
        engine.backstop(trader, 0, sender=stranger)


def test_poke__accrues_funding_longs_pay_shorts(
    engine, trader, maker, funded, trade, submit, make_update, chain, feed
):
    open_long(trade, maker, trader)
    # The rate accrues from the block its update lands in.
    start = submit([make_update(funding_rate=10**10)]).timestamp  # 1e-8 per second
    engine.poke(MARKET_BTC, sender=maker)
    chain.mine(deltatime=1000)
    feed.set_answer(feed_answer(60_000), sender=maker)
    elapsed = chain.blocks.head.timestamp - start
    owed = 60_000 * WAD * 10**10 * elapsed // WAD  # USD per BTC
    assert engine.funding_index(MARKET_BTC) == owed
    assert engine.account_health(trader, 0)[0] == DEPOSIT * 10**12 - owed
    assert engine.account_health(maker, 0)[0] == DEPOSIT * 10**12 + owed


def test_poke__unknown_market(engine, stranger):
    with ape.reverts("engine: unknown market"):
        engine.poke(9, sender=stranger)


def test_mark_price__unknown_market(engine):
    with ape.reverts("engine: unknown market"):
        engine.mark_price(9)


def test_health_batch__reports_each(engine, trader, maker, funded, trade, feed):
    open_long(trade, maker, trader)
    feed.set_answer(feed_answer(51_000), sender=maker)
    trader_health, maker_health = engine.health_batch([trader, maker], [0, 0])
    assert trader_health.liquidatable and not maker_health.liquidatable
    assert trader_health.equity == 1_000 * WAD


def test_health_batch__length_mismatch(engine, trader):
    with ape.reverts("engine: length mismatch"):
        engine.health_batch([trader], [0, 1])


def test_accounts_with_positions__swap_and_pop(engine, trader, maker, liquidator, funded, trade):
    open_long(trade, maker, trader, WAD // 10)
    trade(maker, liquidator, WAD // 10)
    assert engine.accounts_with_positions_count() == 3
    assert engine.accounts_with_positions(0, 10) == [
        (trader.address, 0),
        (maker.address, 0),
        (liquidator.address, 0),
    ]
    trade(trader, maker, WAD // 10)  # the maker buys back from the trader: the trader is flat
    assert engine.accounts_with_positions_count() == 2
    # The last entry moved into the freed slot.
    assert engine.accounts_with_positions(0, 10) == [(liquidator.address, 0), (maker.address, 0)]
    assert engine.accounts_with_positions(1, 10) == [(maker.address, 0)]
