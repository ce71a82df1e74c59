"""Portfolio margin in the engine: a cross account whose two or more positions all lie in one
scenario group with fresh scenarios is margined at min(T, max(L + c T, phi T)); every other
account (stale scenarios, one position, isolated, a market outside the group) at the tiered
sums. Trades, withdrawals and liquidation use the same figures, and the partial close equals
:func:`offchain.protocol.engine_math.closable`.

The book: long 1 BTC and short 20 ETH (60,000 USD a side). No risk update has landed, so both
markets are margined at the stale multiplier 4x: tiered maintenance 1,200 USD a leg (0.5% x 4),
tiered initial 2,400 a leg. With the four scenarios below the worst loss is 600 USD, so
maintenance = max(600 + 10% x 2,400, 20% x 2,400) = 840 and initial = 1.5 x 840 = 1,260.
"""

import ape
import pytest

from offchain.protocol import engine_math as em
from tests.conftest import WAD
from tests.engine.conftest import LIQUIDATION_FEE, USDC
from tests.engine.reference import group_view, market_view, reference_health
from tests.feature_system import (
    GROUP,
    MARKET_BTC,
    MARKET_ETH,
    MARKET_XRP,
    SCENARIO_HEARTBEAT,
    deploy_features,
    scenario_update,
)

# Crash, rally, and two relative moves (basis points), per market of the group.
ROWS = [[-1_000, 1_000, -300, 300], [-1_100, 1_100, -200, 200], [-1_500, 1_500, -400, 400]]
HEDGED_MAINTENANCE = 840 * WAD
HEDGED_INITIAL = 1_260 * WAD
TIERED_MAINTENANCE = 2_400 * WAD
TIERED_INITIAL = 4_800 * WAD


@pytest.fixture(scope="module", autouse=True)
def system(project, chain, owner, guardian, keeper, relayer, trader, maker, liquidator, exchange):
    built = deploy_features(project, owner, guardian, [keeper.address], exchange=exchange)
    built.fund(maker, 10_000_000)
    built.fund(liquidator, 1_000_000)
    return built


@pytest.fixture
def scenarios_landed(system, chain, keeper, relayer):
    """The group's four scenarios, fresh; returns the time they landed."""
    update = scenario_update(chain.pending_timestamp, ROWS)
    return system.submit_scenarios([update], [keeper], relayer).timestamp


def open_hedged(system, trader, maker, collateral=20_000, sub=0, keep=None):
    """Long 1 BTC and short 20 ETH; with ``keep``, withdraw down to that equity (the first leg
    alone needs the tiered initial margin, 2,400 USD)."""
    system.fund(trader, collateral, sub=sub)
    system.trade(MARKET_BTC, maker, trader, WAD, taker_sub=sub)
    system.trade(MARKET_ETH, maker, trader, -20 * WAD, taker_sub=sub)
    if keep is not None:
        system.engine.withdraw(sub, (collateral - keep) * USDC, sender=trader)


def matches_reference(system, owner, sub, chain) -> em.Health:
    """The contract's health equals the reference's from stored state; returns the latter."""
    h = reference_health(system.engine, system.registry, owner, sub, chain.blocks.head.timestamp)
    assert system.engine.account_health(owner, sub) == (h.equity, h.maintenance, h.initial)
    return h


def go_stale(system, chain, landed):
    """Past the scenarios' heartbeat (the feeds are refreshed: only the scenarios are stale)."""
    chain.pending_timestamp = landed + SCENARIO_HEARTBEAT + 1
    for feed in system.feeds.values():
        feed.set_answer(feed.latestRoundData()[1], sender=system.owner)


def test_portfolio__hedged_pair_margined_at_the_formula(
    system, scenarios_landed, trader, maker, chain
):
    open_hedged(system, trader, maker)
    h = matches_reference(system, trader, 0, chain)
    assert h.portfolio
    assert (h.maintenance, h.initial, h.tiered) == (
        HEDGED_MAINTENANCE,
        HEDGED_INITIAL,
        TIERED_MAINTENANCE,
    )
    details = system.engine.account_details(trader, 0)
    assert (details.maintenance, details.initial) == (HEDGED_MAINTENANCE, HEDGED_INITIAL)
    assert details.tiered_maintenance == TIERED_MAINTENANCE
    assert details.portfolio_group == GROUP
    assert details.funding_reserve == 0


def test_portfolio__outright_pair_gets_little_credit(
    system, scenarios_landed, trader, maker, chain
):
    """Long both legs: the crash scenario loses 12,600 USD, above the tiered sum: min() keeps T."""
    system.fund(trader, 20_000)
    system.trade(MARKET_BTC, maker, trader, WAD)
    system.trade(MARKET_ETH, maker, trader, 20 * WAD)
    h = matches_reference(system, trader, 0, chain)
    assert h.portfolio and h.maintenance == TIERED_MAINTENANCE


def test_portfolio__stale_scenarios_give_the_tiered_sum(
    system, scenarios_landed, trader, maker, chain
):
    open_hedged(system, trader, maker)
    chain.mine(timestamp=scenarios_landed + SCENARIO_HEARTBEAT)
    assert system.engine.account_health(trader, 0)[1] == HEDGED_MAINTENANCE  # last fresh second
    chain.mine(timestamp=scenarios_landed + SCENARIO_HEARTBEAT + 1)
    h = matches_reference(system, trader, 0, chain)
    assert not h.portfolio
    assert (h.maintenance, h.initial) == (TIERED_MAINTENANCE, TIERED_INITIAL)
    assert system.engine.account_details(trader, 0).portfolio_group == 0


def test_portfolio__absent_scenarios_give_the_tiered_sum(system, trader, maker, chain):
    open_hedged(system, trader, maker)
    h = matches_reference(system, trader, 0, chain)
    assert (h.portfolio, h.maintenance, h.initial) == (False, TIERED_MAINTENANCE, TIERED_INITIAL)


def test_portfolio__one_position_isolated_or_outside_the_group_is_tiered(
    system, scenarios_landed, trader, maker, chain
):
    # One position.
    system.fund(trader, 20_000, sub=1)
    system.trade(MARKET_BTC, maker, trader, WAD, taker_sub=1)
    # Isolated to BTC (an isolated account holds one market by construction).
    system.engine.set_isolated(2, MARKET_BTC, sender=trader)
    system.fund(trader, 20_000, sub=2)
    system.trade(MARKET_BTC, maker, trader, WAD, taker_sub=2)
    with ape.reverts("engine: isolated"):
        system.trade(MARKET_ETH, maker, trader, -20 * WAD, taker_sub=2)
    # BTC in the group, XRP outside it.
    system.fund(trader, 20_000, sub=3)
    system.trade(MARKET_BTC, maker, trader, WAD, taker_sub=3)
    system.trade(MARKET_XRP, maker, trader, -30_000 * WAD, taker_sub=3)
    for sub, tiered in ((1, 1_200 * WAD), (2, 1_200 * WAD), (3, 2_400 * WAD)):
        h = matches_reference(system, trader, sub, chain)
        assert not h.portfolio
        assert h.maintenance == h.tiered == tiered
        assert system.engine.account_details(trader, sub).portfolio_group == 0


def test_settle_trade__opens_a_hedge_on_portfolio_initial_margin(
    system, scenarios_landed, trader, maker, chain
):
    """3,000 USD carries the hedged pair (initial 1,260) but not the tiered 4,800."""
    system.fund(trader, 3_000)
    system.trade(MARKET_BTC, maker, trader, WAD)
    system.trade(MARKET_ETH, maker, trader, -20 * WAD)
    assert system.engine.account_health(trader, 0) == (
        3_000 * WAD,
        HEDGED_MAINTENANCE,
        HEDGED_INITIAL,
    )
    # The same book with stale scenarios is refused.
    system.trade(MARKET_ETH, maker, trader, 20 * WAD)
    go_stale(system, chain, scenarios_landed)
    with ape.reverts("engine: below initial margin"):
        system.trade(MARKET_ETH, maker, trader, -20 * WAD)


def test_withdraw__down_to_portfolio_initial_margin(system, scenarios_landed, trader, maker, chain):
    open_hedged(system, trader, maker, collateral=3_000)
    system.engine.withdraw(0, 1_740 * USDC, sender=trader)  # equity 1,260 = initial
    assert system.engine.account_health(trader, 0)[0] == HEDGED_INITIAL
    with ape.reverts("engine: below initial margin"):
        system.engine.withdraw(0, 1, sender=trader)


def test_withdraw__stale_scenarios_need_the_tiered_initial(
    system, scenarios_landed, trader, maker, chain
):
    open_hedged(system, trader, maker, collateral=5_000)
    go_stale(system, chain, scenarios_landed)
    with ape.reverts("engine: below initial margin"):
        system.engine.withdraw(0, 201 * USDC, sender=trader)  # would leave 4,799 < 4,800
    system.engine.withdraw(0, 200 * USDC, sender=trader)


def test_is_liquidatable__portfolio_credit_ends_with_the_scenarios(
    system, scenarios_landed, trader, maker, chain
):
    open_hedged(system, trader, maker, collateral=3_000, keep=1_500)  # kept by the credit
    assert not system.engine.is_liquidatable(trader, 0)
    assert system.engine.users_to_liquidate(0, 10) == []
    chain.mine(timestamp=scenarios_landed + SCENARIO_HEARTBEAT + 1)
    assert system.engine.is_liquidatable(trader, 0)  # 1,500 < 2,400
    assert system.engine.users_to_liquidate(0, 10) == [(trader.address, 0)]


@pytest.mark.parametrize("market_id", [MARKET_BTC, MARKET_ETH])
def test_liquidate__portfolio_partial_close_equals_the_reference(
    system, scenarios_landed, trader, maker, liquidator, chain, market_id
):
    # Long 1 BTC against short 25 ETH, opened on its initial margin (3,780 USD); ETH +50 USD
    # leaves equity 2,530 below maintenance 2,660 (the portfolio figure, under the tiered
    # 2,725) and above half of it: a partial close of either leg restores health.
    system.fund(trader, 3_780)
    system.trade(MARKET_BTC, maker, trader, WAD)
    system.trade(MARKET_ETH, maker, trader, -25 * WAD)
    system.set_price(MARKET_ETH, 3_050)
    now = chain.blocks.head.timestamp
    h = matches_reference(system, trader, 0, chain)
    assert h.portfolio and h.liquidatable and 2 * h.equity > h.maintenance
    j = h.leg(market_id)
    groups = {GROUP: group_view(system.engine, GROUP)}
    market = market_view(system.engine, system.registry, market_id)
    expected = em.closable(h, j, LIQUIDATION_FEE, market, groups, now)
    abs_size = abs(h.legs[j].size)
    assert h.maintenance < h.tiered and 0 < expected < abs_size

    closed = system.engine.liquidate.call(trader, 0, market_id, abs_size, 0, sender=liquidator)
    assert closed == expected
    receipt = system.engine.liquidate(trader, 0, market_id, abs_size, 0, sender=liquidator)
    [log] = receipt.decode_logs(system.engine.Liquidation)
    fee_rate = em.fee_rate(h.legs[j], LIQUIDATION_FEE)
    assert log.penalty == em.penalty(expected, h.legs[j].price, fee_rate, h.equity)
    after = matches_reference(system, trader, 0, chain)
    assert after.portfolio
    # The partial close restores 110% of the maintenance after it (the rule's target).
    assert after.equity >= -(-after.maintenance * 11 // 10) - 1
