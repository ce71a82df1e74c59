"""set_price_bounds: a price stuck at the feed aggregator's min/max answer blocks new risk only."""

import ape

from tests.conftest import MARKET_BTC, WAD
from tests.engine.conftest import USDC, feed_answer

LOW, HIGH = 40_000, 100_000  # the aggregator's minAnswer / maxAnswer, in USD


def set_bounds(engine, owner, low=LOW, high=HIGH):
    return engine.set_price_bounds(MARKET_BTC, feed_answer(low), feed_answer(high), sender=owner)


def test_set_price_bounds__stores_wad_and_logs(engine, owner):
    receipt = set_bounds(engine, owner)
    assert engine.price_bounds(MARKET_BTC) == (LOW * WAD, HIGH * WAD)
    [log] = receipt.decode_logs(engine.PriceBoundsSet)
    assert (log.old_min_price, log.old_max_price) == (0, 0)
    assert (log.min_price, log.max_price) == (LOW * WAD, HIGH * WAD)


def test_set_price_bounds__zero_removes(engine, owner, feed, trade, maker, trader, funded):
    set_bounds(engine, owner)
    feed.set_answer(feed_answer(LOW), sender=owner)
    engine.set_price_bounds(MARKET_BTC, 0, 0, sender=owner)
    assert engine.price_bounds(MARKET_BTC) == (0, 0)
    trade(maker, trader, WAD // 10, price=LOW * WAD)  # no bound: an ordinary price again


def test_set_price_bounds__not_owner(engine, stranger):
    with ape.reverts("ownable: caller is not the owner"):
        engine.set_price_bounds(MARKET_BTC, 1, 2, sender=stranger)


def test_set_price_bounds__unknown_market(engine, owner):
    with ape.reverts("engine: unknown market"):
        engine.set_price_bounds(9, 1, 2, sender=owner)


def test_set_price_bounds__min_not_below_max(engine, owner):
    with ape.reverts("engine: bad price bounds"):
        engine.set_price_bounds(MARKET_BTC, 5, 5, sender=owner)
    with ape.reverts("engine: bad price bounds"):
        engine.set_price_bounds(MARKET_BTC, -1, 5, sender=owner)


def test_settle_trade__price_at_min_bound_blocks_opening_not_closing(
    engine, owner, feed, trade, maker, trader, funded
):
    trade(maker, trader, WAD // 10)
    set_bounds(engine, owner)
    feed.set_answer(feed_answer(LOW), sender=owner)  # the aggregator clamped a crash
    with ape.reverts("engine: price at feed bound"):
        trade(maker, trader, WAD // 10, price=LOW * WAD)
    trade(trader, maker, WAD // 10, price=LOW * WAD)  # the trader closes: allowed
    assert engine.position(trader, 0, MARKET_BTC)[0] == 0


def test_withdraw__price_at_max_bound_blocked_with_positions(
    engine, owner, feed, trade, maker, trader, funded
):
    trade(maker, trader, WAD // 10)
    set_bounds(engine, owner, high=61_000)
    feed.set_answer(feed_answer(61_000), sender=owner)
    with ape.reverts("engine: price at feed bound"):
        engine.withdraw(0, USDC, sender=trader)
    feed.set_answer(feed_answer(60_500), sender=owner)  # back inside: withdrawals resume
    engine.withdraw(0, USDC, sender=trader)


def test_liquidate__works_at_a_bound(engine, owner, feed, trade, maker, trader, liquidator, funded):
    trade(maker, trader, WAD)
    set_bounds(engine, owner, low=50_400)
    feed.set_answer(feed_answer(50_400), sender=owner)
    assert engine.is_liquidatable(trader, 0)
    engine.liquidate(trader, 0, MARKET_BTC, WAD, 0, sender=liquidator)
    assert engine.position(trader, 0, MARKET_BTC) == (0, 0)
