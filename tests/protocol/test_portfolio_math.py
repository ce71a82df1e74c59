"""The portfolio margin reference against an independent exact-rational reading of the formula,
the int16 shock packing, eligibility and the scenario-update guardrails."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offchain.protocol.portfolio_math import (
    INT16_MAX,
    INT16_MIN,
    MAX_SCENARIOS,
    GroupParams,
    PortfolioPosition,
    ShockGuardrails,
    ShocksRejected,
    account_requirements,
    check_shocks,
    clamp_shocks,
    is_portfolio_eligible,
    pack_shocks,
    portfolio_margin,
    scenario_loss,
    scenarios_fresh,
    unpack_shocks,
)

WAD = 10**18
BTC, ETH, SOL = 1, 2, 3


def fraction_margin(
    sizes: list[int],
    prices: list[int],
    m: list[int],
    im: list[int],
    z: list[list[int]],
    c: int,
    phi: int,
    r: int,
) -> tuple[int, int]:
    """The README's formula read with exact rationals: sizes and prices in WAD, shocks in
    basis points, c/phi/r in WAD; every requirement rounded up once."""
    n_scen = max((len(row) for row in z), default=0)
    T, T_I = sum(m), sum(im)
    losses = []
    for k in range(n_scen):
        move = Fraction(0)
        for s, p, row in zip(sizes, prices, z, strict=True):
            shock = row[k] if k < len(row) else 0
            notional = Fraction(s, WAD) * Fraction(p, WAD)  # USD
            move += notional * Fraction(shock, 10_000)
        losses.append(math.ceil(-move * WAD))  # back to WAD USD, rounded against the account
    L = max([0, *losses])
    P = max(L + math.ceil(Fraction(c, WAD) * T), math.ceil(Fraction(phi, WAD) * T))
    return min(T, P), min(T_I, math.ceil(Fraction(r, WAD) * P))


def positions(sizes, prices, m, im, z) -> list[PortfolioPosition]:
    return [PortfolioPosition(*args) for args in zip(sizes, prices, m, im, z, strict=True)]


PARAMS = GroupParams(residual=WAD // 10, floor=WAD // 5, initial_ratio=2 * WAD)


def test_portfolio_margin__hedged_pair_by_hand():
    # 1 BTC long at 40,000 USD and 10 ETH short at 2,000 USD (20,000 USD of notional)
    btc = PortfolioPosition(WAD, 40_000 * WAD, 400 * WAD, 800 * WAD, [-500, 500, -300])
    eth = PortfolioPosition(-10 * WAD, 2_000 * WAD, 240 * WAD, 480 * WAD, [-700, 700, 100])
    # scenario 0: BTC -5% -> -2,000; ETH -7% on a short -> +1,400: loss 600
    # scenario 1: the mirror: -600; scenario 2: BTC -3% -> -1,200, ETH +1% short -> -200: 1,400
    assert [scenario_loss([btc, eth], k) for k in range(3)] == [600 * WAD, -600 * WAD, 1400 * WAD]
    pm = portfolio_margin([btc, eth], 3, PARAMS)
    assert pm.tiered_maintenance == 640 * WAD
    assert pm.worst_loss == 1400 * WAD
    # P = max(1400 + 64, 128) = 1464 > T = 640: the tiered sum binds
    assert pm.requirement == 1464 * WAD
    assert (pm.maintenance, pm.initial) == (640 * WAD, 1280 * WAD)
    # without the third scenario: P = max(600 + 64, 128) = 664 -> still T; with K = 2 and a
    # lower residual the portfolio requirement binds
    low = GroupParams(residual=0, floor=WAD // 2, initial_ratio=WAD + WAD // 2)
    pm2 = portfolio_margin([btc, eth], 2, low)
    assert pm2.requirement == 600 * WAD  # max(600 + 0, 320)
    assert (pm2.maintenance, pm2.initial) == (600 * WAD, 900 * WAD)


def test_scenario_loss__rounds_up_towards_the_account():
    # 1 wei of base at a price of 1 wei moved by -1 bp: a loss of 1e-40 USD -> 1 wei
    tiny = PortfolioPosition(1, 1, 0, 0, [-1, 1])
    assert scenario_loss([tiny], 0) == 1
    # a tiny gain rounds up too: towards +infinity, i.e. to zero, never to a credit of 1 wei
    assert scenario_loss([tiny], 1) == 0


def test_portfolio_margin__floor_keeps_a_perfect_hedge_above_zero():
    a = PortfolioPosition(WAD, 100 * WAD, 5 * WAD, 10 * WAD, [-1000, 1000])
    b = PortfolioPosition(-WAD, 100 * WAD, 5 * WAD, 10 * WAD, [-1000, 1000])
    params = GroupParams(residual=WAD // 20, floor=WAD // 4, initial_ratio=2 * WAD)
    pm = portfolio_margin([a, b], 2, params)
    assert pm.worst_loss == 0
    assert pm.requirement == math.ceil(10 * WAD / 4) == 2_500_000_000_000_000_000
    assert pm.maintenance == pm.requirement and pm.initial == 2 * pm.requirement


def test_portfolio_margin__unused_scenarios_change_nothing():
    a = PortfolioPosition(3 * WAD, 7 * WAD, WAD, 2 * WAD, [-250, 40])
    b = PortfolioPosition(-2 * WAD, 11 * WAD, WAD, 2 * WAD, [-100, 300])
    padded_a = PortfolioPosition(3 * WAD, 7 * WAD, WAD, 2 * WAD, [-250, 40] + [0] * 14)
    padded_b = PortfolioPosition(-2 * WAD, 11 * WAD, WAD, 2 * WAD, [-100, 300] + [0] * 14)
    assert portfolio_margin([a, b], 2, PARAMS) == portfolio_margin(
        [padded_a, padded_b], MAX_SCENARIOS, PARAMS
    )


sizes_st = st.integers(-(10**24), 10**24)
prices_st = st.integers(1, 10**24)
req_st = st.integers(0, 10**26)
shock_st = st.integers(INT16_MIN, INT16_MAX)


@given(
    data=st.data(),
    n_pos=st.integers(1, 6),
    n_scen=st.integers(0, MAX_SCENARIOS),
    c=st.integers(0, WAD),
    phi=st.integers(0, WAD),
    r=st.integers(WAD, 5 * WAD),
)
def test_portfolio_margin__equals_the_exact_rational_formula(data, n_pos, n_scen, c, phi, r):
    sizes = data.draw(st.lists(sizes_st, min_size=n_pos, max_size=n_pos))
    prices = data.draw(st.lists(prices_st, min_size=n_pos, max_size=n_pos))
    m = data.draw(st.lists(req_st, min_size=n_pos, max_size=n_pos))
    im = [x + data.draw(req_st) for x in m]
    z = [data.draw(st.lists(shock_st, min_size=n_scen, max_size=n_scen)) for _ in range(n_pos)]
    params = GroupParams(residual=c, floor=phi, initial_ratio=r)
    pm = portfolio_margin(positions(sizes, prices, m, im, z), n_scen, params)
    assert (pm.maintenance, pm.initial) == fraction_margin(sizes, prices, m, im, z, c, phi, r)
    assert 0 <= pm.maintenance <= pm.tiered_maintenance
    assert pm.maintenance >= math.ceil(Fraction(phi, WAD) * pm.tiered_maintenance)


@given(st.lists(shock_st, min_size=0, max_size=MAX_SCENARIOS))
def test_pack_shocks__round_trips(shocks):
    word = pack_shocks(shocks)
    assert 0 <= word < 2**256
    assert unpack_shocks(word, len(shocks)) == shocks
    assert unpack_shocks(word)[len(shocks) :] == [0] * (MAX_SCENARIOS - len(shocks))


@given(st.integers(0, 2**256 - 1))
def test_unpack_shocks__every_word_round_trips(word):
    assert pack_shocks(unpack_shocks(word)) == word


def test_pack_shocks__twos_complement_layout():
    assert pack_shocks([-1]) == 0xFFFF
    assert pack_shocks([0, INT16_MIN]) == 0x8000 << 16
    assert pack_shocks([INT16_MAX] + [0] * 14 + [-2]) == (0xFFFE << 240) | 0x7FFF
    assert unpack_shocks(0xFFFF << 240) == [0] * 15 + [-1]


@pytest.mark.parametrize(
    ("shocks", "message"),
    [
        ([INT16_MAX + 1], "does not fit an int16"),
        ([INT16_MIN - 1], "does not fit an int16"),
        ([0] * 17, "at most 16 scenarios"),
        ([1.5], "integer number of basis points"),
    ],
)
def test_pack_shocks__rejects_what_does_not_fit(shocks, message):
    with pytest.raises(ValueError, match=message):
        pack_shocks(shocks)


def test_unpack_shocks__rejects_a_word_out_of_range():
    with pytest.raises(ValueError, match="uint256"):
        unpack_shocks(2**256)


@pytest.mark.parametrize(
    ("cross", "markets", "fresh", "eligible"),
    [
        (True, [BTC, ETH], True, True),
        (True, [BTC, ETH, SOL], True, True),
        (True, [BTC], True, False),  # one position: the tiered sum, as today
        (False, [BTC, ETH], True, False),  # isolated
        (True, [BTC, 9], True, False),  # a market outside the group
        (True, [BTC, ETH], False, False),  # stale or absent scenarios
        (True, [], True, False),
    ],
)
def test_is_portfolio_eligible__rules(cross, markets, fresh, eligible):
    assert is_portfolio_eligible(cross, markets, {BTC, ETH, SOL}, fresh) is eligible


def test_scenarios_fresh__heartbeat_and_absent():
    assert not scenarios_fresh(0, 7200, 10_000)
    assert scenarios_fresh(1000, 7200, 8200)
    assert not scenarios_fresh(1000, 7200, 8201)


def test_account_requirements__ineligible_outright_keeps_the_tiered_sum():
    btc = PortfolioPosition(WAD, 40_000 * WAD, 400 * WAD, 800 * WAD, [-10, 10])
    assert account_requirements([btc], eligible=False, n_scenarios=2, params=PARAMS) == (
        400 * WAD,
        800 * WAD,
    )
    # eligible, the same book gets the portfolio formula (here min(T, P) with P small)
    maint, _ = account_requirements([btc], eligible=True, n_scenarios=2, params=PARAMS)
    assert maint == max(4 * WAD + 40 * WAD, 80 * WAD)


GUARD = ShockGuardrails(max_shock=(3000, 4000), max_step=(500, 600), heartbeat=7200)


def test_check_shocks__first_update_only_bounded():
    check_shocks([[-3000, 3000], [-4000, 4000]], None, GUARD)
    bound = "scenarios: shock beyond its bound \\(market 1 scenario 0: \\|-4001\\| bps"
    with pytest.raises(ShocksRejected, match=bound):
        check_shocks([[-3000, 3000], [-4001, 4000]], None, GUARD)


def test_check_shocks__step_limit_from_the_second_update():
    prev = [[-1000, 1000], [-1500, 1500]]
    check_shocks([[-1500, 500], [-2100, 900]], prev, GUARD)
    step = "scenarios: shock moved beyond the step limit \\(market 0 scenario 0: step -501"
    with pytest.raises(ShocksRejected, match=step):
        check_shocks([[-1501, 1000], [-1500, 1500]], prev, GUARD)


def test_check_shocks__shape():
    with pytest.raises(ShocksRejected, match="scenarios: one shock word per market \\(1 markets"):
        check_shocks([[1]], None, GUARD)
    with pytest.raises(ShocksRejected, match="scenarios: count must be 1 to 16"):
        check_shocks([[1, 2], [1]], None, GUARD)


@given(
    st.lists(st.lists(shock_st, min_size=4, max_size=4), min_size=2, max_size=2),
    st.lists(st.lists(st.integers(-3000, 3000), min_size=4, max_size=4), min_size=2, max_size=2),
)
def test_clamp_shocks__always_accepted_and_idempotent(proposed, previous):
    out = clamp_shocks(proposed, previous, GUARD)
    check_shocks(out, previous, GUARD)
    assert clamp_shocks(out, previous, GUARD) == out
    # a proposal already acceptable is left alone
    try:
        check_shocks(proposed, previous, GUARD)
    except ShocksRejected:
        return
    assert out == proposed


def test_clamp_shocks__after_the_bound_is_lowered_the_market_starts_afresh():
    # Reconfiguring a group clears its scenarios on chain (ScenarioRegistry.configure_group), so
    # the keeper clamps against no previous update: the lowered bound alone binds.
    lowered = ShockGuardrails(max_shock=(800, 4000), max_step=(100, 600), heartbeat=7200)
    out = clamp_shocks([[-2000, 2000], [-200, 200]], None, lowered)
    assert out == [[-800, 800], [-200, 200]]
    check_shocks(out, None, lowered)
    # against the old update (not in force any more) no answer could be accepted
    with pytest.raises(ShocksRejected):
        check_shocks(out, [[-1000, 1000], [-100, 100]], lowered)


def test_group_params__validation():
    with pytest.raises(ValueError, match="residual"):
        GroupParams(residual=WAD + 1, floor=0, initial_ratio=WAD)
    with pytest.raises(ValueError, match="initial_ratio"):
        GroupParams(residual=0, floor=0, initial_ratio=WAD - 1)
