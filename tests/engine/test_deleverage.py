"""Auto-deleveraging: every refusal with its message; the transfer equals
:func:`offchain.protocol.engine_math.adl_transfer`; bad debt is repaid before the insurance
fund; events; the deficit reaches zero; and afterwards the engine's token balance covers every
positive equity plus the insurance fund (before, it falls short by exactly the deficit).

The module's starting point: a 300 USD insurance fund; the trader, long 1 BTC from 60,000 on
11,000 USD, is backstopped at 48,500 (equity -500): the fund covers 300, 200 is bad debt, and the
fund holds the long at 48,500. The maker holds the opposite short (11,500 USD of profit).
"""

import ape
import pytest

from offchain.protocol import engine_math as em
from tests.conftest import WAD
from tests.engine.conftest import USDC
from tests.feature_system import MARKET_BTC, MARKET_ETH, deploy_features

BAD_DEBT = 200 * WAD


@pytest.fixture(scope="module", autouse=True)
def system(
    project, chain, owner, guardian, keeper, relayer, trader, maker, liquidator, stranger, exchange
):
    built = deploy_features(project, owner, guardian, [keeper.address], exchange=exchange)
    built.fund(maker, 1_000_000)
    built.fund(liquidator, 1_000_000)
    built.fund_insurance(300)
    built.fund(trader, 11_000)
    built.trade(MARKET_BTC, maker, trader, WAD)
    built.set_price(MARKET_BTC, 48_500)
    built.engine.backstop(trader, 0, sender=liquidator)
    assert built.engine.bad_debt() == BAD_DEBT
    assert built.engine.position(built.engine, 0, MARKET_BTC) == (WAD, 48_500 * WAD)
    return built


@pytest.fixture(scope="module")
def engine(system):
    return system.engine


def coverage(system, actors) -> int:
    """The engine's token balance (WAD) less every positive equity and the insurance fund:
    minus the deficit while there is one (the bad debt the winners are owed beyond the tokens),
    never negative once it is recovered."""
    total = system.engine.insurance_fund()
    for who in actors:
        for sub in range(3):
            total += max(system.engine.account_health(who, sub)[0], 0)
    return system.token.balanceOf(system.engine) * 10**12 - total


def deleverage(engine, who, size, caller, sub=0):
    """Deleverage ``who`` in BTC; returns (receipt, the Deleveraged log, equity before)."""
    equity = engine.account_health(who, sub)[0]
    receipt = engine.deleverage(who, sub, MARKET_BTC, size, sender=caller)
    [log] = receipt.decode_logs(engine.Deleveraged)
    return receipt, log, equity


# Refusals


def test_deleverage__refusals_with_their_messages(
    system, engine, maker, trader, liquidator, stranger
):
    with ape.reverts("engine: zero size"):
        engine.deleverage(maker, 0, MARKET_BTC, 0, sender=stranger)
    with ape.reverts("engine: insurance account"):
        engine.deleverage(engine, 0, MARKET_BTC, WAD, sender=stranger)
    with ape.reverts("engine: unknown market"):
        engine.deleverage(maker, 0, 99, WAD, sender=stranger)
    with ape.reverts("engine: insurance fund holds no position in the market"):
        engine.deleverage(maker, 0, MARKET_ETH, WAD, sender=stranger)
    with ape.reverts("engine: no position"):
        engine.deleverage(liquidator, 0, MARKET_BTC, WAD, sender=stranger)
    # A long, on the fund's side, is not deleveraged against it.
    system.fund(trader, 100_000, sub=1)
    system.trade(MARKET_BTC, liquidator, trader, WAD, 48_500 * WAD, taker_sub=1)
    with ape.reverts("engine: position on the insurance fund's side"):
        engine.deleverage(trader, 1, MARKET_BTC, WAD, sender=stranger)
    liquidations = ape.project.EngineLiquidations.at(engine.LIQUIDATIONS())
    with ape.reverts("engine: call through the engine"):
        liquidations.deleverage(maker, 0, MARKET_BTC, WAD, sender=stranger)


def test_deleverage__no_equity_to_deleverage(system, engine, stranger, liquidator):
    """A short opened after the crash and underwater after a rebound has nothing to give."""
    system.fund(stranger, 2_000)
    system.trade(MARKET_BTC, liquidator, stranger, -WAD, 48_500 * WAD)
    system.set_price(MARKET_BTC, 52_000)
    assert engine.account_health(stranger, 0)[0] < 0
    assert engine.deficit() == BAD_DEBT  # the fund's long is in profit: only the bad debt
    with ape.reverts("engine: no equity to deleverage"):
        engine.deleverage(stranger, 0, MARKET_BTC, WAD, sender=liquidator)


def test_deleverage__no_deficit_to_recover(system, engine, maker, stranger):
    deleverage(engine, maker, WAD, stranger)
    assert engine.deficit() == 0
    with ape.reverts("engine: no deficit to recover"):
        engine.deleverage(maker, 0, MARKET_BTC, WAD, sender=stranger)


# The transfer


def test_deleverage__partial_transfer_equals_the_reference(
    system, engine, maker, trader, liquidator, stranger, chain
):
    size = 4 * WAD // 10
    deficit = engine.deficit()
    fund_size = engine.position(engine, 0, MARKET_BTC)[0]
    position = engine.position(maker, 0, MARKET_BTC)
    _, log, equity = deleverage(engine, maker, size, stranger)
    transfer = em.adl_transfer(deficit, size, fund_size, equity)
    assert transfer == 80 * WAD  # 200 x 0.4 / 1
    assert (log.market_id, log.owner, log.subaccount, log.caller) == (
        MARKET_BTC,
        maker.address,
        0,
        stranger.address,
    )
    assert (log.size, log.price, log.transfer, log.equity) == (size, 48_500 * WAD, transfer, equity)
    assert log.unrealised_pnl == -48_500 * WAD - position[1]  # 11,500 of profit
    assert log.unrealised_pnl == 11_500 * WAD
    assert log.deficit_after == engine.deficit() == deficit - transfer
    assert engine.bad_debt() == BAD_DEBT - transfer  # bad debt first
    assert engine.account_health(maker, 0)[0] == equity - transfer
    assert engine.position(maker, 0, MARKET_BTC)[0] == -WAD + size
    assert engine.position(engine, 0, MARKET_BTC)[0] == WAD - size
    assert engine.open_interest(MARKET_BTC) == WAD - size
    assert coverage(system, (maker, trader, liquidator, stranger)) == -engine.deficit()


def test_deleverage__steps_bring_the_deficit_to_zero(
    system, engine, maker, trader, liquidator, stranger
):
    for size in (4 * WAD // 10, 10 * WAD):  # the second asks more than the fund holds
        deficit = engine.deficit()
        fund_size = engine.position(engine, 0, MARKET_BTC)[0]
        closed = engine.deleverage.call(maker, 0, MARKET_BTC, size, sender=stranger)
        _, log, equity = deleverage(engine, maker, size, stranger)
        assert closed == min(size, fund_size)
        assert log.transfer == em.adl_transfer(deficit, closed, fund_size, equity)
    assert engine.deficit() == engine.bad_debt() == 0
    assert engine.position(engine, 0, MARKET_BTC) == (0, 0)
    assert engine.markets_of(engine, 0) == []
    assert engine.insurance_fund() == 0
    assert coverage(system, (maker, trader, liquidator, stranger)) >= 0


def test_deleverage__repays_bad_debt_then_the_fund(
    system, engine, maker, trader, liquidator, stranger
):
    """At 45,000 the fund's long is 3,500 under water: deficit 3,700. Half the position pays
    1,850: 200 to the bad debt, 1,650 to the fund; the other half pays the rest."""
    system.set_price(MARKET_BTC, 45_000)
    assert engine.deficit() == 3_700 * WAD
    assert engine.insurance_fund() == 0
    _, log, _ = deleverage(engine, maker, WAD // 2, stranger)
    assert log.transfer == 1_850 * WAD
    assert engine.bad_debt() == 0
    assert engine.collateral_of(engine, 0) == 1_650 * WAD - 1_750 * WAD  # realised -1,750
    assert log.deficit_after == engine.deficit() == 1_850 * WAD
    _, log, _ = deleverage(engine, maker, WAD // 2, stranger)
    assert log.transfer == 1_850 * WAD
    assert log.deficit_after == engine.deficit() == 0
    assert engine.collateral_of(engine, 0) == 0
    # Every dollar is someone's: nothing lost, nothing created.
    assert coverage(system, (maker, trader, liquidator, stranger)) == 0


def test_deleverage__transfer_capped_at_equity_less_one(
    system, engine, maker, liquidator, stranger, trader
):
    """A short opened at 45,000 on 2,000 USD has 2,000 of equity against a 3,700 deficit: it
    pays 1,999.999...9 and keeps one wei."""
    system.set_price(MARKET_BTC, 45_000)
    system.fund(stranger, 2_000)
    system.trade(MARKET_BTC, liquidator, stranger, -WAD, 45_000 * WAD)
    _, log, equity = deleverage(engine, stranger, WAD, liquidator)
    assert equity == 2_000 * WAD
    assert log.transfer == em.adl_transfer(3_700 * WAD, WAD, WAD, equity) == equity - 1
    assert engine.account_health(stranger, 0)[0] == 1
    assert engine.deficit() == 3_700 * WAD - (equity - 1)
    # What is left of the stranger cannot be withdrawn below one wei of collateral.
    with ape.reverts("engine: insufficient collateral"):
        engine.withdraw(0, USDC, sender=stranger)
    assert coverage(system, (maker, trader, liquidator, stranger)) == -engine.deficit()


# Bad debt repaid from the insurance fund


def test_fund_insurance__repays_bad_debt_first(system, engine, maker, trader, liquidator, stranger):
    receipt = system.fund_insurance(500)
    [log] = receipt.decode_logs(engine.BadDebtRepaid)
    assert (log.amount, log.bad_debt_after) == (BAD_DEBT, 0)
    assert engine.bad_debt() == engine.deficit() == 0
    assert engine.collateral_of(engine, 0) == 300 * WAD  # 500 in, 200 to the bad debt
    assert coverage(system, (maker, trader, liquidator, stranger)) == 0


def test_repay_bad_debt__from_the_funds_marked_equity_only(
    system, engine, maker, trader, liquidator, stranger
):
    # At 48,500 the fund's long is flat and its collateral spent: nothing to repay with.
    assert engine.repay_bad_debt.call(sender=stranger) == 0
    receipt = engine.repay_bad_debt(sender=stranger)
    assert not receipt.decode_logs(engine.BadDebtRepaid)
    assert engine.bad_debt() == BAD_DEBT
    # At 48,600 the long is 100 in profit: the fund repays 100 and keeps zero equity.
    system.set_price(MARKET_BTC, 48_600)
    engine.repay_bad_debt(sender=stranger)
    assert engine.bad_debt() == BAD_DEBT - 100 * WAD
    assert engine.insurance_fund() == 0
    # At 52,000 it is 3,500 in profit: the rest is repaid, the fund stays positive.
    system.set_price(MARKET_BTC, 52_000)
    receipt = engine.repay_bad_debt(sender=stranger)
    [log] = receipt.decode_logs(engine.BadDebtRepaid)
    assert (log.caller, log.amount, log.bad_debt_after) == (stranger.address, 100 * WAD, 0)
    assert engine.deficit() == 0 and engine.insurance_fund() == 3_300 * WAD
    assert coverage(system, (maker, trader, liquidator, stranger)) >= 0
