"""The funding reserve: the side that pays funding carries the expected funding over a governed
horizon in its maintenance and initial margin, at the rate in force (decaying once the market is
stale), ceil(N * |rate| * seconds / WAD); and `account_details`, field by field, against the
reference."""

import ape
import pytest

from offchain.protocol.margin_math import MarketState, funding_rate_in_force
from tests.conftest import DEFAULT_GUARDRAILS, WAD
from tests.engine.reference import reference_health
from tests.feature_system import MARKET_BTC, deploy_features, risk_update

RATE = DEFAULT_GUARDRAILS.max_funding_rate  # 1e-6 per second, longs pay
RESERVE_SECONDS = 8 * 3_600
H = DEFAULT_GUARDRAILS.heartbeat
LONG, SHORT = 0, 1  # the trader's subaccounts


@pytest.fixture(scope="module", autouse=True)
def system(project, chain, owner, guardian, keeper, relayer, trader, maker, stranger, exchange):
    built = deploy_features(project, owner, guardian, [keeper.address], exchange=exchange)
    built.fund(maker, 1_000_000)
    return built


@pytest.fixture
def signed(system, chain, keeper, relayer):
    """Sign a BTC risk update (multiplier 2x) with ``rate``; returns the time it landed."""

    def _signed(rate):
        update = risk_update(chain.pending_timestamp, MARKET_BTC, 2 * WAD, rate)
        return system.submit_risk([update], [keeper], relayer).timestamp

    return _signed


@pytest.fixture
def books(system, trader, maker, owner):
    """The trader long 1 BTC in one subaccount and short 1 BTC in another, 8 h of reserve."""
    system.engine.set_funding_reserve(MARKET_BTC, RESERVE_SECONDS, sender=owner)
    for sub, size in ((LONG, WAD), (SHORT, -WAD)):
        system.fund(trader, 5_000, sub=sub)
        system.trade(MARKET_BTC, maker, trader, size, taker_sub=sub)


def reserve_of(notional: int, rate: int) -> int:
    return -(-notional * abs(rate) * RESERVE_SECONDS // WAD)


def matches_reference(system, trader, sub, chain):
    h = reference_health(system.engine, system.registry, trader, sub, chain.blocks.head.timestamp)
    assert system.engine.account_health(trader, sub) == (h.equity, h.maintenance, h.initial)
    details = system.engine.account_details(trader, sub)
    assert (details.equity, details.maintenance, details.initial) == (
        h.equity,
        h.maintenance,
        h.initial,
    )
    assert details.funding_reserve == h.reserve
    assert details.tiered_maintenance == h.tiered
    assert details.funding_owed == sum(leg.owed for leg in h.legs)
    return h, details


# Governance


def test_set_funding_reserve__stores_and_logs(system, owner):
    receipt = system.engine.set_funding_reserve(MARKET_BTC, RESERVE_SECONDS, sender=owner)
    [log] = receipt.decode_logs(system.engine.FundingReserveSet)
    assert (log.market_id, log.old_seconds, log.new_seconds) == (MARKET_BTC, 0, RESERVE_SECONDS)
    assert system.engine.funding_reserve_seconds(MARKET_BTC) == RESERVE_SECONDS
    receipt = system.engine.set_funding_reserve(MARKET_BTC, 86_400, sender=owner)  # the bound
    [log] = receipt.decode_logs(system.engine.FundingReserveSet)
    assert (log.old_seconds, log.new_seconds) == (RESERVE_SECONDS, 86_400)
    # The oracle word it shares keeps its feed and listing.
    assert system.engine.mark_price(MARKET_BTC) == (60_000 * WAD, True)


def test_set_funding_reserve__refusals(system, owner, stranger):
    with ape.reverts("ownable: caller is not the owner"):
        system.engine.set_funding_reserve(MARKET_BTC, 60, sender=stranger)
    with ape.reverts("engine: funding reserve above a day"):
        system.engine.set_funding_reserve(MARKET_BTC, 86_401, sender=owner)
    with ape.reverts("engine: unknown market"):
        system.engine.set_funding_reserve(99, 60, sender=owner)


# The paying side


def test_reserve__only_the_paying_side_carries_it(system, books, signed, trader, chain):
    assert system.engine.account_details(trader, LONG).funding_reserve == 0  # no rate yet
    signed(RATE)
    long, _ = matches_reference(system, trader, LONG, chain)
    assert long.reserve == reserve_of(60_000 * WAD, RATE) == 1_728 * WAD
    assert long.maintenance == long.tiered + long.reserve
    assert long.initial == sum(leg.initial for leg in long.legs) + long.reserve
    short, _ = matches_reference(system, trader, SHORT, chain)
    assert short.reserve == 0 and short.maintenance == short.tiered
    # A negative rate: shorts pay.
    chain.mine(deltatime=60)
    signed(-RATE // 2)
    long, _ = matches_reference(system, trader, LONG, chain)
    short, _ = matches_reference(system, trader, SHORT, chain)
    assert long.reserve == 0
    assert short.reserve == reserve_of(60_000 * WAD, RATE // 2)


def test_reserve__follows_the_rate_in_force_and_decays_when_stale(
    system, books, signed, trader, chain
):
    landed = signed(RATE)
    state = MarketState(*system.registry.market_state(MARKET_BTC))
    seen = []
    for at in (landed + H, landed + H + H // 2, landed + H + 3 * H // 4, landed + 2 * H):
        chain.mine(timestamp=at)
        rate = funding_rate_in_force(state, DEFAULT_GUARDRAILS, at)
        h, _ = matches_reference(system, trader, LONG, chain)
        assert h.reserve == reserve_of(h.legs[0].notional, rate)
        seen.append(rate)
    assert seen == [RATE, RATE // 2, RATE // 4, 0]


def test_reserve__is_part_of_the_trade_check(system, signed, trader, maker, owner):
    """With 8 h of funding reserved, 5,000 USD carries 1 BTC long (initial 1,200 + 1,728) but
    not 2 BTC (2,400 + 3,456); without the reserve it carries 2 BTC."""
    signed(RATE)
    system.engine.set_funding_reserve(MARKET_BTC, RESERVE_SECONDS, sender=owner)
    system.fund(trader, 5_000)
    system.trade(MARKET_BTC, maker, trader, WAD)
    assert system.engine.account_health(trader, 0)[2] == 1_200 * WAD + 1_728 * WAD
    with ape.reverts("engine: below initial margin"):
        system.trade(MARKET_BTC, maker, trader, WAD)
    system.engine.set_funding_reserve(MARKET_BTC, 0, sender=owner)
    system.trade(MARKET_BTC, maker, trader, WAD)  # 2,400 without the reserve


def test_account_details__every_field(system, books, signed, trader, chain):
    landed = signed(RATE)
    chain.mine(timestamp=landed + 600)
    h, details = matches_reference(system, trader, LONG, chain)
    assert details.funding_owed > 0  # the long has paid 10 minutes of funding
    assert details.funding_owed == h.legs[0].owed
    assert details.equity == system.engine.collateral_of(trader, LONG) - h.legs[0].owed
    assert details.portfolio_group == 0
    assert (details.class_id, details.class_multiplier, details.class_expires_at) == (0, WAD, 0)
    # Two subaccounts of the trader traded 1 BTC each.
    assert details.trailing_volume == system.engine.trailing_volume(trader) == 120_000 * WAD
