"""settle_trade: accounting, margin, band, oracle, pause, caps."""

import ape

from tests.conftest import MARKET_BTC, WAD
from tests.engine.conftest import BTC_PRICE, DEPOSIT, feed_answer

PRICE = BTC_PRICE * WAD


def test_settle_trade__moves_size_and_notional(engine, trader, maker, funded, trade):
    receipt = trade(maker, trader, WAD, price=61_000 * WAD)
    assert engine.position(trader, 0, MARKET_BTC) == (WAD, 61_000 * WAD)
    assert engine.position(maker, 0, MARKET_BTC) == (-WAD, -61_000 * WAD)
    assert engine.open_interest(MARKET_BTC) == WAD
    assert len(receipt.decode_logs(engine.Trade)) == 1
    # Marked at 60k: the taker is 1k down, the maker 1k up.
    assert engine.account_health(trader, 0)[0] == DEPOSIT * 10**12 - 1_000 * WAD


def test_settle_trade__realises_profit_on_close(engine, trader, maker, funded, trade, feed):
    trade(maker, trader, WAD)
    feed.set_answer(feed_answer(62_000), sender=maker)
    trade(maker, trader, -WAD, price=62_000 * WAD)
    assert engine.position(trader, 0, MARKET_BTC) == (0, 0)
    assert engine.collateral_of(trader, 0) == DEPOSIT * 10**12 + 2_000 * WAD
    assert engine.collateral_of(maker, 0) == DEPOSIT * 10**12 - 2_000 * WAD
    assert engine.open_interest(MARKET_BTC) == 0
    assert engine.accounts_with_positions_count() == 0


def test_settle_trade__flip_realises_and_reopens(engine, trader, maker, funded, trade, feed):
    trade(maker, trader, WAD)
    feed.set_answer(feed_answer(61_000), sender=maker)
    trade(maker, trader, -2 * WAD, price=61_000 * WAD)
    assert engine.position(trader, 0, MARKET_BTC) == (-WAD, -61_000 * WAD)
    assert engine.collateral_of(trader, 0) == DEPOSIT * 10**12 + 1_000 * WAD
    assert engine.open_interest(MARKET_BTC) == WAD


def test_settle_trade__not_exchange(engine, trader, maker):
    with ape.reverts("engine: not exchange"):
        engine.settle_trade(MARKET_BTC, maker, 0, trader, 0, WAD, PRICE, sender=trader)


def test_settle_trade__zero_size(trade, trader, maker):
    with ape.reverts("engine: zero size"):
        trade(maker, trader, 0)


def test_settle_trade__self_trade(trade, trader):
    with ape.reverts("engine: self trade"):
        trade(trader, trader, WAD)


def test_settle_trade__unknown_market(trade, trader, maker):
    with ape.reverts("engine: unknown market"):
        trade(maker, trader, WAD, market_id=9)


def test_settle_trade__price_outside_band(trade, trader, maker, funded):
    with ape.reverts("engine: price outside band"):
        trade(maker, trader, WAD, price=PRICE * 105 // 100 + 1)


def test_settle_trade__initial_margin(trade, trader, maker, funded):
    # 10k USD covers initial margin (4%) of at most 250k notional.
    with ape.reverts("engine: below initial margin"):
        trade(maker, trader, 5 * WAD)


def test_settle_trade__maintenance_margin(engine, trade, trader, maker, funded, feed, fund):
    fund(maker, 100_000 * 10**6)
    trade(maker, trader, 4 * WAD)  # initial 9,600 of 10,000
    feed.set_answer(feed_answer(58_500), sender=maker)  # equity 4,000 vs maintenance 4,680
    # Reducing at the band's worst price would leave the trader below maintenance.
    with ape.reverts("engine: below maintenance margin"):
        trade(maker, trader, -WAD // 10, price=58_500 * WAD * 95 // 100)


def test_settle_trade__paused_blocks_growth_not_reduction(
    engine, owner, trade, trader, maker, funded
):
    trade(maker, trader, WAD)
    engine.pause(sender=owner)
    with ape.reverts("engine: paused"):
        trade(maker, trader, WAD)
    trade(maker, trader, -WAD)
    assert engine.position(trader, 0, MARKET_BTC) == (0, 0)


def test_settle_trade__engine_subaccount_cannot_open(engine, trade, maker, funded):
    with ape.reverts("engine: insurance fund may only reduce"):
        trade(maker, engine, WAD, taker_sub=7)
    with ape.reverts("engine: insurance fund may only reduce"):
        trade(maker, engine, WAD)  # the fund itself may not take new risk either


def test_settle_trade__insurance_fund_unwinds_backstopped_position(
    engine, trade, trader, maker, funded, feed, stranger
):
    trade(maker, trader, WAD)
    feed.set_answer(feed_answer(48_000), sender=maker)
    engine.backstop(trader, 0, sender=stranger)
    assert engine.position(engine, 0, MARKET_BTC)[0] == WAD
    trade(engine, maker, WAD, price=48_000 * WAD)  # the fund sells its long to the maker
    assert engine.position(engine, 0, MARKET_BTC) == (0, 0)
    assert engine.open_interest(MARKET_BTC) == 0


def test_settle_trade__stale_price(trade, trader, maker, funded, chain):
    chain.mine(deltatime=3601)
    with ape.reverts("engine: stale price"):
        trade(maker, trader, WAD)


def test_settle_trade__invalid_price(trade, trader, maker, funded, feed):
    feed.set_answer(-1, sender=maker)
    with ape.reverts("engine: invalid price"):
        trade(maker, trader, WAD)


def test_settle_trade__reduce_with_stale_feed_uses_last_good_price(
    engine, trade, trader, maker, funded, chain
):
    trade(maker, trader, WAD)
    chain.mine(deltatime=7200)
    assert engine.mark_price(MARKET_BTC) == (PRICE, False)
    trade(maker, trader, -WAD)
    assert engine.position(trader, 0, MARKET_BTC) == (0, 0)


def test_settle_trade__open_interest_cap(engine, owner, feed, trade, trader, maker, funded):
    from tests.engine.conftest import config

    engine.update_market(MARKET_BTC, config(feed, oi_cap=60_000 * WAD), sender=owner)
    trade(maker, trader, WAD)
    with ape.reverts("engine: open interest cap"):
        trade(maker, trader, 1)


def test_settle_trade__too_many_positions(engine, add_markets, trade, trader, maker, fund):
    fund(trader, 10**6 * 10**6)
    fund(maker, 10**6 * 10**6)
    add_markets(range(2, 10))
    for market_id in range(1, 9):
        trade(maker, trader, WAD // 100, market_id=market_id)
    assert len(engine.markets_of(trader, 0)) == 8
    with ape.reverts("engine: too many positions"):
        trade(maker, trader, WAD // 100, market_id=9)
    # Closing one frees a slot (swap-and-pop keeps the list compact).
    trade(maker, trader, -WAD // 100, market_id=3)
    trade(maker, trader, WAD // 100, market_id=9)
    assert sorted(engine.markets_of(trader, 0)) == [1, 2, 4, 5, 6, 7, 8, 9]
