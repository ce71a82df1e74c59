"""The maintenance and initial margin of one account in each class, against
:mod:`offchain.protocol.engine_math` and by hand: the class multiplier scales each position's
multiplier in force (rounded up); a discount never goes below the tier rate times the market's
minimum multiplier; a penalty has no such floor."""

import pytest

from offchain.protocol import engine_math as em
from tests.conftest import DEFAULT_GUARDRAILS, WAD
from tests.engine.conftest import USDC
from tests.engine.reference import reference_health
from tests.feature_system import (
    MARKET_BTC,
    MARKET_ETH,
    PROFILE_HEARTBEAT,
    profile_update,
    risk_update,
)

TIER0_RATE = 5 * 10**15  # 0.5% below 1M USD
MULTIPLIER = 12 * WAD // 10  # the keepers' multiplier in force (fresh)
# class id: multiplier. Class 0 is the default (1x).
CLASSES = {1: 9 * WAD // 10, 2: WAD // 2, 3: 3 * WAD // 2, 4: 4 * WAD}
SUBACCOUNT_OF = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@pytest.fixture(scope="module", autouse=True)
def accounts_in_classes(system, chain, owner, trader, maker, keeper, relayer):
    """Subaccount i of the trader in class i, each long 1 BTC and short 10 ETH, with the
    keepers' multiplier 1.2x fresh in both markets. Built once for the module; returns the
    time the profiles were signed."""
    now = chain.pending_timestamp
    system.submit_risk(
        [risk_update(now, MARKET_BTC, MULTIPLIER), risk_update(now, MARKET_ETH, MULTIPLIER)],
        [keeper],
        relayer,
    )
    for class_id, multiplier in CLASSES.items():
        system.profiles.define_class(class_id, (multiplier, 0, 0), sender=owner)
    system.fund(maker, 10_000_000)
    system.token.mint(trader, 20_000 * USDC * len(SUBACCOUNT_OF), sender=trader)
    system.token.approve(system.engine, 2**256 - 1, sender=trader)
    for sub in SUBACCOUNT_OF.values():
        system.engine.deposit(sub, 20_000 * USDC, sender=trader)
        system.trade(MARKET_BTC, maker, trader, WAD, taker_sub=sub)
        system.trade(MARKET_ETH, maker, trader, -10 * WAD, taker_sub=sub)
    chain.mine(deltatime=1)
    now = chain.pending_timestamp
    system.submit_profiles(
        [profile_update(now, trader, c, subaccount=s) for c, s in SUBACCOUNT_OF.items()],
        [keeper],
        relayer,
    )
    return now


@pytest.mark.parametrize("class_id", sorted(SUBACCOUNT_OF))
def test_class_margin__equals_the_reference(system, accounts_in_classes, chain, trader, class_id):
    sub = SUBACCOUNT_OF[class_id]
    now = chain.blocks.head.timestamp
    h = reference_health(system.engine, system.registry, trader, sub, now)
    assert system.engine.account_health(trader, sub) == (h.equity, h.maintenance, h.initial)
    details = system.engine.account_details(trader, sub)
    assert details.class_id == class_id
    assert details.class_multiplier == CLASSES.get(class_id, WAD)

    # By hand: tier-0 notional, multiplier 1.2x times the class, floored at 1x for a discount.
    mult = em.with_class(MULTIPLIER, CLASSES.get(class_id, WAD), DEFAULT_GUARDRAILS.min_multiplier)
    expected = {1: 108, 2: 100, 3: 180, 4: 480}.get(class_id, 120) * WAD // 100
    assert mult == expected
    for leg in h.legs:
        assert leg.maintenance == ceil_div(leg.notional * TIER0_RATE * mult, WAD**2)
    if class_id == 2:
        # 1.2 x 0.5 = 0.6x would undercut the minimum multiplier: the floor (1x) applies.
        floor = sum(ceil_div(leg.notional * TIER0_RATE, WAD) for leg in h.legs)
        assert h.maintenance == floor


def test_class_margin__ordered_by_class_multiplier(system, accounts_in_classes, trader):
    maintenance = {c: system.engine.account_health(trader, s)[1] for c, s in SUBACCOUNT_OF.items()}
    assert maintenance[2] < maintenance[1] < maintenance[0] < maintenance[3] < maintenance[4]


def test_class_margin__expired_class_margins_at_one(system, accounts_in_classes, chain, trader):
    """After the heartbeat every account is margined as the default class (with the markets'
    multipliers stale by then, as the reference computes them)."""
    chain.mine(timestamp=accounts_in_classes + PROFILE_HEARTBEAT + 60)
    now = chain.blocks.head.timestamp
    default = system.engine.account_health(trader, 0)
    for class_id in (2, 3):  # the deepest discount and a penalty
        sub = SUBACCOUNT_OF[class_id]
        assert system.engine.account_details(trader, sub).class_multiplier == WAD
        h = reference_health(system.engine, system.registry, trader, sub, now)
        assert system.engine.account_health(trader, sub) == (h.equity, h.maintenance, h.initial)
        assert system.engine.account_health(trader, sub)[1:] == default[1:]
