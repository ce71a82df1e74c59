"""deposit, withdraw, fund_insurance, set_isolated."""

import ape

from tests.conftest import MARKET_BTC, WAD
from tests.engine.conftest import DEPOSIT, USDC, feed_answer


def test_deposit__credits_wad_and_moves_tokens(engine, token, trader, fund):
    fund(trader, 1_234_567, sub=3)
    assert engine.collateral_of(trader, 3) == 1_234_567 * 10**12
    assert token.balanceOf(engine) == 1_234_567
    assert engine.account_health(trader, 3) == (1_234_567 * 10**12, 0, 0)


def test_deposit__logs(engine, token, trader):
    token.mint(trader, USDC, sender=trader)
    token.approve(engine, USDC, sender=trader)
    receipt = engine.deposit(1, USDC, sender=trader)
    [log] = receipt.decode_logs(engine.Deposit)
    assert (log.owner, log.subaccount, log.amount) == (trader.address, 1, USDC)


def test_deposit__zero_amount(engine, trader):
    with ape.reverts("engine: zero amount"):
        engine.deposit(0, 0, sender=trader)


def test_deposit__works_while_paused(engine, owner, trader, fund):
    engine.pause(sender=owner)
    fund(trader, USDC)  # an account can always add margin
    assert engine.collateral_of(trader, 0) == USDC * 10**12


def test_withdraw__returns_tokens(engine, token, trader, fund):
    fund(trader)
    engine.withdraw(0, DEPOSIT // 4, sender=trader)
    assert token.balanceOf(trader) == DEPOSIT // 4
    assert engine.collateral_of(trader, 0) == (DEPOSIT - DEPOSIT // 4) * 10**12


def test_withdraw__works_while_paused(engine, owner, trader, fund):
    fund(trader)
    engine.pause(sender=owner)
    engine.withdraw(0, DEPOSIT, sender=trader)
    assert engine.collateral_of(trader, 0) == 0


def test_withdraw__zero_amount(engine, trader):
    with ape.reverts("engine: zero amount"):
        engine.withdraw(0, 0, sender=trader)


def test_withdraw__insufficient_collateral(engine, trader, fund):
    fund(trader)
    with ape.reverts("engine: insufficient collateral"):
        engine.withdraw(0, DEPOSIT + 1, sender=trader)


def test_withdraw__initial_margin(engine, trader, maker, funded, trade):
    trade(maker, trader, WAD)  # initial margin 4% of 60k = 2,400 USD
    engine.withdraw(0, DEPOSIT - 2_400 * USDC, sender=trader)
    with ape.reverts("engine: below initial margin"):
        engine.withdraw(0, 1, sender=trader)


def test_withdraw__unrealised_profit_not_withdrawable(engine, trader, maker, funded, trade, feed):
    trade(maker, trader, WAD)
    feed.set_answer(feed_answer(90_000), sender=maker)  # +30k unrealised
    with ape.reverts("engine: insufficient collateral"):
        engine.withdraw(0, DEPOSIT + 1, sender=trader)


def test_withdraw__stale_price(engine, trader, maker, funded, trade, chain):
    trade(maker, trader, WAD)
    chain.mine(deltatime=3601)
    with ape.reverts("engine: stale price"):
        engine.withdraw(0, USDC, sender=trader)


def test_withdraw__invalid_price(engine, trader, maker, funded, trade, feed):
    trade(maker, trader, WAD)
    feed.set_answer(0, sender=maker)
    with ape.reverts("engine: invalid price"):
        engine.withdraw(0, USDC, sender=trader)


def test_fund_insurance__adds_to_fund(engine, token, stranger):
    token.mint(stranger, 5 * USDC, sender=stranger)
    token.approve(engine, 5 * USDC, sender=stranger)
    receipt = engine.fund_insurance(5 * USDC, sender=stranger)
    assert engine.insurance_fund() == 5 * WAD
    assert token.balanceOf(engine) == 5 * USDC
    assert len(receipt.decode_logs(engine.InsuranceFunded)) == 1


def test_fund_insurance__zero_amount(engine, stranger):
    with ape.reverts("engine: zero amount"):
        engine.fund_insurance(0, sender=stranger)


def test_set_isolated__sets_and_restricts(engine, add_markets, trader, maker, funded, trade):
    add_markets([2])
    engine.set_isolated(0, MARKET_BTC, sender=trader)
    assert engine.isolated_market(trader, 0) == MARKET_BTC
    trade(maker, trader, WAD // 10)
    with ape.reverts("engine: isolated"):
        trade(maker, trader, WAD // 10, market_id=2)


def test_set_isolated__open_positions(engine, trader, maker, funded, trade):
    trade(maker, trader, WAD // 10)
    with ape.reverts("engine: open positions"):
        engine.set_isolated(0, MARKET_BTC, sender=trader)


def test_set_isolated__unknown_market(engine, trader):
    with ape.reverts("engine: unknown market"):
        engine.set_isolated(0, 77, sender=trader)
