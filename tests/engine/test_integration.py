"""An integrator contract calling the engine through interfaces/IMarginEngine.vyi; re-entrancy."""

import ape
import pytest

from offchain.devnet.system import deploy_engine
from tests.conftest import MARKET_BTC, WAD
from tests.engine.conftest import USDC, config, feed_answer


@pytest.fixture
def vault(project, owner, engine, token):
    return project.RiskAwareVault.deploy(engine, token, sender=owner)


def test_vault__acts_for_healthy_refuses_liquidatable(
    vault, engine, trader, maker, funded, trade, feed, stranger
):
    trade(maker, trader, WAD)
    vault.act_for(trader, 0, sender=stranger)
    assert vault.actions(trader) == 1
    assert vault.credit_line(trader, 0) == 10_000 * WAD - 2_400 * WAD
    feed.set_answer(feed_answer(51_000), sender=maker)
    assert vault.credit_line(trader, 0) == 0
    with ape.reverts("vault: account liquidatable"):
        vault.act_for(trader, 0, sender=stranger)


def test_vault__deposits_reserve_through_interface(vault, engine, token, stranger):
    token.mint(stranger, 7 * USDC, sender=stranger)
    token.approve(vault, 7 * USDC, sender=stranger)
    vault.deposit_reserve(4, 7 * USDC, sender=stranger)
    assert engine.collateral_of(vault, 4) == 7 * WAD


def test_deposit__reentrant_token_cannot_reenter(project, owner, registry, feed, stranger):
    evil = project.ReentrantToken.deploy(6, sender=owner)
    engine = deploy_engine(project, owner, evil, registry)
    engine.add_market(MARKET_BTC, config(feed), sender=owner)
    evil.mint(stranger, 100 * USDC, sender=stranger)
    evil.approve(engine, 2**256 - 1, sender=stranger)
    calls = [
        engine.deposit.encode_input(0, USDC),
        engine.withdraw.encode_input(0, USDC),
        engine.settle_trade.encode_input(MARKET_BTC, stranger, 0, owner, 0, WAD, 60_000 * WAD),
        engine.liquidate.encode_input(stranger, 0, MARKET_BTC, WAD, 0),
        engine.backstop.encode_input(stranger, 0),
        engine.fund_insurance.encode_input(USDC),
    ]
    for payload in calls:
        evil.arm(engine, payload, sender=owner)
        engine.deposit(0, USDC, sender=stranger)  # the outer call succeeds, the callback may not
        # The lock reverts before any check: no reason string (a check would give one).
        assert evil.last_response() == b""
        engine.withdraw(0, USDC, sender=stranger)
        assert evil.last_response() == b""
    assert evil.attempts() == 2 * len(calls)
    assert evil.successes() == 0
    assert engine.collateral_of(stranger, 0) == 0
    assert evil.balanceOf(engine) == 0
