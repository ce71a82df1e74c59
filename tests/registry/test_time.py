"""Time: the heartbeat and the stale fallback, the increase ramp (linear, rounded up, complete at
its end), initial margin at the target at once, decreases at once. Views run at the head
block's time, so each check first mines a block stamped with the time it needs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offchain.protocol import margin_math as ref
from offchain.protocol.margin_math import MarketState
from tests.conftest import DEFAULT_GUARDRAILS, DEFAULT_INITIAL_RATIO, DEFAULT_TIERS, MARKET_BTC, WAD
from tests.registry.conftest import configure, guardrails, land_at, state_of, view_at

G = DEFAULT_GUARDRAILS
RAMP = 1000
RAMP_RAILS = guardrails(increase_ramp=RAMP)
NOTIONAL = 1_000_000 * WAD  # base margin S = 5,000 USD
START = 2 * WAD
# +45% plus one wei: the ramp's increments are not whole wei, so rounding shows.
TARGET = 29 * WAD // 10 + 1


def reference_margins(state, rails, now, notional=NOTIONAL):
    m = ref.multiplier_in_force(state, rails, now)
    return (
        m,
        ref.maintenance_margin(DEFAULT_TIERS, m, notional),
        ref.initial_margin(DEFAULT_TIERS, m, state.target, DEFAULT_INITIAL_RATIO, notional),
    )


def contract_margins(registry, notional=NOTIONAL):
    return (
        registry.multiplier(MARKET_BTC),
        registry.maintenance_margin(MARKET_BTC, notional),
        registry.initial_margin(MARKET_BTC, notional),
    )


@pytest.fixture
def ramping(registry, owner, submit, make_update, chain):
    """A market with a 1000 s increase ramp: 2x set at once, then an increase to TARGET.
    Returns the reference state after both and the time the increase landed."""
    configure(registry, owner, MARKET_BTC, rails=RAMP_RAILS)
    first = make_update(multiplier=START)
    landed_first = submit([first]).timestamp
    state = ref.apply_update(MarketState(), RAMP_RAILS, first, landed_first)
    assert state.ramp_from == START  # the stale 4x was above 2x: no ramp
    land_at(chain, landed_first + 10)
    increase = make_update(multiplier=TARGET)
    landed = submit([increase]).timestamp
    state = ref.apply_update(state, RAMP_RAILS, increase, landed)
    assert state_of(registry) == state
    assert state.ramp_from == START
    return state, landed


# Heartbeat and stale fallback


def test_multiplier__stale_before_any_update(registry):
    assert registry.is_stale(MARKET_BTC)
    assert registry.multiplier(MARKET_BTC) == G.stale_multiplier
    assert registry.last_update(MARKET_BTC) == (0, 0)
    assert registry.target_multiplier(MARKET_BTC) == 0


def test_multiplier__fresh_through_heartbeat_then_stale(registry, first_update, chain):
    update, receipt = first_update
    state = ref.apply_update(MarketState(), G, update, receipt.timestamp)

    view_at(chain, receipt.timestamp + G.heartbeat)
    assert not registry.is_stale(MARKET_BTC)
    assert contract_margins(registry) == (2 * WAD, 10_000 * WAD, 20_000 * WAD)

    view_at(chain, receipt.timestamp + G.heartbeat + 1)
    assert registry.is_stale(MARKET_BTC)
    expected = reference_margins(state, G, receipt.timestamp + G.heartbeat + 1)
    assert contract_margins(registry) == expected == (4 * WAD, 20_000 * WAD, 40_000 * WAD)
    assert registry.target_multiplier(MARKET_BTC) == 2 * WAD  # the target is kept


def test_multiplier__stale_keeps_the_last_target_then_decays_as_fast_as_updates_could(
    registry, owner, submit, make_update, chain
):
    """A keeper going silent in a crash must not cut margin: past the heartbeat the 3x target
    stays in force (not the 1x stale multiplier), then falls by at most 10% per hour."""
    rails = guardrails(stale_multiplier=G.min_multiplier)
    configure(registry, owner, MARKET_BTC, rails=rails)
    update = make_update(multiplier=3 * WAD)
    landed = submit([update]).timestamp
    state = ref.apply_update(MarketState(), rails, update, landed)
    stale_at = landed + G.heartbeat + 1

    view_at(chain, stale_at)
    assert registry.is_stale(MARKET_BTC)
    assert contract_margins(registry) == reference_margins(state, rails, stale_at)
    assert contract_margins(registry) == (3 * WAD, 15_000 * WAD, 30_000 * WAD)

    # One decrease interval later: 3x * 0.9 = 2.7x; two: 2.43x; at most 10% per hour.
    previous = 3 * WAD
    for hours, expected in ((1, 27 * WAD // 10), (2, 243 * WAD // 100), (5, None), (30, None)):
        at = landed + G.heartbeat + hours * G.min_decrease_interval
        view_at(chain, at)
        m, maintenance, initial = contract_margins(registry)
        assert (m, maintenance, initial) == reference_margins(state, rails, at)
        if expected is not None:
            assert m == expected
        assert G.min_multiplier <= m <= previous
        previous = m
    # A day and more later the stale multiplier's floor is reached.
    view_at(chain, landed + G.heartbeat + 40 * G.min_decrease_interval)
    assert registry.multiplier(MARKET_BTC) == G.min_multiplier


def test_multiplier__stale_below_the_stale_multiplier_rises_to_it(
    registry, owner, submit, make_update, chain
):
    """A calm 1.5x target under a 4x stale multiplier: the stale multiplier applies."""
    update = make_update(multiplier=15 * WAD // 10)
    landed = submit([update]).timestamp
    view_at(chain, landed + G.heartbeat + 1)
    assert registry.multiplier(MARKET_BTC) == G.stale_multiplier


@given(
    target=st.integers(G.min_multiplier, G.max_multiplier),
    stale=st.integers(G.min_multiplier, G.max_multiplier),
    max_decrease=st.integers(1, WAD - 1),
    interval=st.integers(0, 10**6),
    after=st.integers(1, 2**39),
)
def test_stale_multiplier_in_force__bounds(target, stale, max_decrease, interval, after):
    """Never below the stale multiplier nor below the exact geometric decay of the target;
    never above the target once it is above the stale multiplier; non-increasing in time."""
    rails = guardrails(
        stale_multiplier=stale, max_decrease=max_decrease, min_decrease_interval=interval
    )
    state = MarketState(target=target, ramp_from=target, updated_at=1_000)
    now = 1_000 + G.heartbeat + after
    m = ref.stale_multiplier_in_force(state, rails, now)
    assert m >= stale
    steps = after // max(interval, 1)
    if steps < 200:
        from fractions import Fraction

        exact = Fraction(target) * (Fraction(WAD - max_decrease, WAD) ** steps)
        assert m >= exact
    assert m <= max(target, stale)
    assert ref.stale_multiplier_in_force(state, rails, now + max(interval, 1)) <= m


@pytest.mark.parametrize(
    "rate", [3 * 10**11 + 7, -(3 * 10**11 + 7)], ids=["longs-pay", "shorts-pay"]
)
def test_funding_rate__decays_to_zero_over_the_heartbeat_after_it(
    registry, submit, make_update, chain, rate
):
    """A rate nobody re-signs stops accruing: full until the heartbeat, then linear to zero."""
    update = make_update(multiplier=2 * WAD, funding_rate=rate)
    landed = submit([update]).timestamp
    state = ref.apply_update(MarketState(), G, update, landed)
    h = G.heartbeat
    for offset, expected in (
        (h, rate),
        (h + 1, None),
        (h + h // 2, None),
        (2 * h - 1, None),
        (2 * h, 0),
        (5 * h, 0),
    ):
        view_at(chain, landed + offset)
        got = registry.funding_rate(MARKET_BTC)
        assert got == ref.funding_rate_in_force(state, G, landed + offset)
        if expected is not None:
            assert got == expected
        assert abs(got) <= abs(rate) and got * rate >= 0
    assert ref.funding_rate_in_force(state, G, landed + h + h // 2) == int(rate / 2)


def test_submit_updates__fresh_update_ends_staleness(
    registry, first_update, submit, make_update, chain
):
    _, receipt = first_update
    land_at(chain, receipt.timestamp + G.heartbeat + 100)

    submit([make_update(multiplier=25 * WAD // 10)])

    assert not registry.is_stale(MARKET_BTC)
    assert registry.multiplier(MARKET_BTC) == 25 * WAD // 10


# Increase ramp


def test_multiplier__ramp_starts_at_the_multiplier_in_force(registry, ramping):
    # Viewed in the block the increase landed in: nothing has elapsed yet.
    assert registry.multiplier(MARKET_BTC) == START
    assert registry.target_multiplier(MARKET_BTC) == TARGET


def test_multiplier__ramp_linear_at_midpoint(registry, ramping, chain):
    state, landed = ramping

    view_at(chain, landed + RAMP // 2)

    # Half the step, rounded up: (0.9e18 + 1) / 2 is not a whole wei.
    midpoint = START + (TARGET - START + 1) // 2
    assert registry.multiplier(MARKET_BTC) == midpoint
    assert midpoint == ref.multiplier_in_force(state, RAMP_RAILS, landed + RAMP // 2)
    assert contract_margins(registry) == reference_margins(state, RAMP_RAILS, landed + RAMP // 2)


def test_multiplier__ramp_matches_reference_every_step(registry, ramping, chain):
    state, landed = ramping
    seen = []
    for elapsed in (1, 137, 333, 500, 750, 999):
        view_at(chain, landed + elapsed)
        m = registry.multiplier(MARKET_BTC)
        exact_up = START + -(-(TARGET - START) * elapsed // RAMP)
        assert m == exact_up == ref.multiplier_in_force(state, RAMP_RAILS, landed + elapsed)
        seen.append(m)
    assert seen == sorted(seen)
    assert seen[0] > START
    assert seen[-1] < TARGET


def test_multiplier__ramp_complete_at_its_end(registry, ramping, chain):
    _, landed = ramping

    view_at(chain, landed + RAMP - 1)
    assert registry.multiplier(MARKET_BTC) < TARGET
    view_at(chain, landed + RAMP)
    assert registry.multiplier(MARKET_BTC) == TARGET
    view_at(chain, landed + RAMP + 500)
    assert registry.multiplier(MARKET_BTC) == TARGET


def test_initial_margin__uses_target_at_once_during_ramp(registry, ramping, chain):
    state, landed = ramping
    view_at(chain, landed + 1)

    mm, im = registry.margin_requirements(MARKET_BTC, NOTIONAL)

    # Initial: ceil(5,000 USD * TARGET) * 2 at once; maintenance still near the 2x start.
    im_base = -(-(5_000 * WAD * TARGET) // WAD)
    assert im == 2 * im_base == registry.initial_margin(MARKET_BTC, NOTIONAL)
    assert mm < 5_000 * TARGET
    assert (registry.multiplier(MARKET_BTC), mm, im) == reference_margins(
        state, RAMP_RAILS, landed + 1
    )


def test_multiplier__ramp_interrupted_by_staleness(registry, ramping, chain):
    _, landed = ramping

    view_at(chain, landed + RAMP_RAILS.heartbeat + 1)

    assert registry.is_stale(MARKET_BTC)
    assert registry.multiplier(MARKET_BTC) == RAMP_RAILS.stale_multiplier


def test_submit_updates__increase_during_ramp_restarts_from_in_force(
    registry, ramping, submit, make_update, chain
):
    state, landed = ramping
    at = landed + 400
    land_at(chain, at)
    update = make_update(multiplier=TARGET * 14 // 10)

    submit([update])

    expected = ref.apply_update(state, RAMP_RAILS, update, at)
    assert state_of(registry) == expected
    assert expected.ramp_from == ref.multiplier_in_force(state, RAMP_RAILS, at)
    assert registry.multiplier(MARKET_BTC) == expected.ramp_from


def test_submit_updates__increase_below_stale_multiplier_applies_at_once(
    registry, owner, submit, make_update, chain
):
    configure(registry, owner, MARKET_BTC, rails=RAMP_RAILS)
    landed = submit([make_update(multiplier=START)]).timestamp
    land_at(chain, landed + RAMP_RAILS.heartbeat + 1)  # stale: 4x in force

    submit([make_update(multiplier=3 * WAD)])

    # The in-force multiplier (4x) was already above the new target: no ramp up to it.
    assert registry.multiplier(MARKET_BTC) == 3 * WAD
    assert registry.market_state(MARKET_BTC).ramp_from == 3 * WAD


# Decreases


def test_submit_updates__decrease_applies_at_once(registry, ramping, submit, make_update, chain):
    state, landed = ramping
    at = landed + RAMP + 1  # the ramp is over: TARGET in force
    land_at(chain, at)
    update = make_update(multiplier=27 * WAD // 10)

    receipt = submit([update])

    assert receipt.timestamp == at
    assert registry.multiplier(MARKET_BTC) == 27 * WAD // 10  # in the block it landed in
    expected = ref.apply_update(state, RAMP_RAILS, update, at)
    assert state_of(registry) == expected
    assert contract_margins(registry) == reference_margins(expected, RAMP_RAILS, at)
    assert contract_margins(registry)[1:] == (13_500 * WAD, 27_000 * WAD)


def test_submit_updates__decrease_without_ramp_applies_at_once(
    registry, first_update, submit, make_update
):
    submit([make_update(multiplier=19 * WAD // 10)])

    assert registry.multiplier(MARKET_BTC) == 19 * WAD // 10
    assert registry.maintenance_margin(MARKET_BTC, NOTIONAL) == 9_500 * WAD


# Property: the ramp and the stale fallback at random times match the reference.


@given(
    ramp=st.integers(1, 7200),
    start=st.integers(WAD, 6 * WAD),
    step=st.integers(0, WAD // 2),
    gap=st.integers(1, 8000),
    offsets=st.lists(st.integers(0, 8000), min_size=1, max_size=3),
)
def test_multiplier__ramp_and_staleness_match_reference(
    registry, owner, chain, submit, make_update, ramp, start, step, gap, offsets
):
    rails = guardrails(increase_ramp=ramp)
    target = start * (WAD + step) // WAD
    with chain.isolate():
        configure(registry, owner, MARKET_BTC, rails=rails)
        first = make_update(multiplier=start)
        landed = submit([first]).timestamp
        state = ref.apply_update(MarketState(), rails, first, landed)
        land_at(chain, landed + gap)
        second = make_update(multiplier=target)
        landed = submit([second]).timestamp
        state = ref.apply_update(state, rails, second, landed)
        assert state_of(registry) == state

        for offset in sorted(set(offsets)):
            now = landed + offset
            if now > chain.blocks.head.timestamp:
                view_at(chain, now)
            assert registry.is_stale(MARKET_BTC) == ref.is_stale(state, rails, now)
            assert contract_margins(registry) == reference_margins(state, rails, now)
