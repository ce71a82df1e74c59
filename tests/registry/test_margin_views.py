"""maintenance_margin / initial_margin: hand-computed figures, then hypothesis properties
(continuity at tier floors, monotonicity, the notional cap, rounding up) and equality with the
pure-Python reference to the wei for random schedules, multipliers, updates and times.

Each hypothesis example runs inside ``chain.isolate()`` (ape does not reset the chain between
examples) and costs one to three transactions; everything else is calls."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import accumulate, pairwise

import ape
from hypothesis import given
from hypothesis import strategies as st

from offchain.protocol import margin_math as ref
from offchain.protocol.margin_math import Guardrails, MarketState, Tier, UpdateRejected
from tests.conftest import DEFAULT_TIERS, MARKET_BTC, MARKET_ETH, WAD
from tests.registry.conftest import configure, guardrails, view_at

PROPERTY_MARKET = 7
MAX_MULT = 2**64 - 1


# Hand-computed figures (default schedule: 0.5% to 1M, 1% to 10M, 2.5% above; ratio 2).


def test_maintenance_margin__stale_before_any_update(registry):
    # 0.5% of 1M = 5,000 USD at the stale 4x multiplier.
    assert registry.maintenance_margin(MARKET_BTC, 1_000_000 * WAD) == 20_000 * WAD
    assert registry.initial_margin(MARKET_BTC, 1_000_000 * WAD) == 40_000 * WAD


def test_maintenance_margin__progressive_brackets(registry, first_update):
    # 5,000 + 1% of 9M + 2.5% of 10M = 345,000 USD, at 2x.
    assert registry.maintenance_margin(MARKET_BTC, 20_000_000 * WAD) == 690_000 * WAD
    assert registry.initial_margin(MARKET_BTC, 20_000_000 * WAD) == 1_380_000 * WAD
    assert tuple(registry.margin_requirements(MARKET_BTC, 20_000_000 * WAD)) == (
        690_000 * WAD,
        1_380_000 * WAD,
    )


def test_maintenance_margin__zero_notional(registry):
    assert registry.maintenance_margin(MARKET_BTC, 0) == 0
    assert registry.initial_margin(MARKET_BTC, 0) == 0


def test_maintenance_margin__one_wei_rounds_up(registry):
    # 0.5% of 1 wei at 4x is 0.02 wei: the requirement rounds up to 1 wei.
    assert registry.maintenance_margin(MARKET_BTC, 1) == 1
    assert registry.initial_margin(MARKET_BTC, 1) == 1


def test_maintenance_margin__capped_at_notional(registry, owner):
    configure(
        registry,
        owner,
        MARKET_ETH,
        [Tier(0, WAD // 2)],
        3 * WAD,
        guardrails(stale_multiplier=10 * WAD),
    )
    # 50% at 10x would be 5x the notional: the requirement stops at the notional.
    assert registry.maintenance_margin(MARKET_ETH, 1000 * WAD) == 1000 * WAD
    assert registry.initial_margin(MARKET_ETH, 1000 * WAD) == 1000 * WAD
    assert registry.maintenance_margin(MARKET_ETH, 1) == 1


def test_maintenance_margin__unknown_market(registry):
    with ape.reverts("registry: unknown market"):
        registry.maintenance_margin(99, WAD)
    with ape.reverts("registry: unknown market"):
        registry.initial_margin(99, WAD)
    with ape.reverts("registry: unknown market"):
        registry.multiplier(99)


# Strategies


@st.composite
def tier_schedules(draw) -> list[Tier]:
    """1 to 8 tiers: floors strictly increasing from 0 (gaps of 1 wei to 1e12 USD), rates
    non-decreasing in (0, WAD] with repeats and the extremes likely."""
    n = draw(st.integers(1, 8))
    gap = st.one_of(st.integers(1, 3), st.integers(1, 10**30))
    floors = list(accumulate([0, *draw(st.lists(gap, min_size=n - 1, max_size=n - 1))]))
    rate = st.one_of(st.sampled_from([1, WAD]), st.integers(1, WAD), st.integers(1, 10**17))
    rates = sorted(draw(st.lists(rate, min_size=n, max_size=n)))
    return [Tier(f, r) for f, r in zip(floors, rates, strict=True)]


multipliers = st.one_of(
    st.integers(WAD, 10 * WAD), st.integers(1, MAX_MULT), st.sampled_from([1, WAD, MAX_MULT])
)


def open_rails(stale: int) -> Guardrails:
    """Guardrails that let a single update set any multiplier: only the stale one matters."""
    return guardrails(min_multiplier=1, max_multiplier=MAX_MULT, stale_multiplier=stale)


# An independent statement of the maths, for the properties (the reference module is checked
# against the contract separately).


def exact_base(tiers: list[Tier], notional: int) -> int:
    """S(N) as a piecewise-linear function: S(floor_k) plus the slice inside tier k."""
    k = max(i for i, t in enumerate(tiers) if t.notional_floor <= notional)
    below = sum(
        t.maintenance_rate * (tiers[i + 1].notional_floor - t.notional_floor)
        for i, t in enumerate(tiers[:k])
    )
    return below + tiers[k].maintenance_rate * (notional - tiers[k].notional_floor)


def exact_maintenance(tiers: list[Tier], multiplier: int, notional: int) -> Fraction:
    return Fraction(exact_base(tiers, notional) * multiplier, WAD * WAD)


def probe_notionals(tiers: list[Tier], extra: list[int]) -> list[int]:
    points = set(extra)
    for t in tiers[1:]:
        points.update({t.notional_floor - 1, t.notional_floor, t.notional_floor + 1})
    return sorted(points)


# Properties


@given(tiers=tier_schedules(), multiplier=multipliers, extra=st.lists(st.integers(0, 10**31)))
def test_maintenance_margin__continuous_monotone_capped_rounded_up(
    registry, owner, chain, tiers, multiplier, extra
):
    with chain.isolate():
        configure(registry, owner, PROPERTY_MARKET, tiers, WAD, open_rails(multiplier))
        assert registry.multiplier(PROPERTY_MARKET) == multiplier  # stale: no update yet

        notionals = probe_notionals(tiers, extra[:6])
        margins = [registry.maintenance_margin(PROPERTY_MARKET, n) for n in notionals]

        for n, mm in zip(notionals, margins, strict=True):
            exact = exact_maintenance(tiers, multiplier, n)
            assert mm == min(n, math.ceil(exact))  # one rounding, upwards
            assert mm <= n
            assert mm >= min(n, exact)
        points = list(zip(notionals, margins, strict=True))
        for (n0, mm0), (n1, mm1) in pairwise(points):
            assert mm1 >= mm0  # non-decreasing in notional
            if n1 == n0 + 1:
                # One wei more notional moves the requirement by at most the marginal rate
                # (rounded up): no jump at any tier floor.
                rate = max(t.maintenance_rate for t in tiers if t.notional_floor <= n0)
                assert mm1 - mm0 <= math.ceil(Fraction(rate * multiplier, WAD * WAD))


@given(
    tiers=tier_schedules(),
    stale=multipliers,
    ratio=st.one_of(st.just(WAD), st.integers(WAD, 5 * WAD), st.integers(WAD, 2**100)),
    target=st.none() | multipliers,
    ramp=st.integers(0, 7200),
    wait=st.integers(0, 10_000),
    notionals=st.lists(st.integers(0, 10**31), min_size=1, max_size=4),
)
def test_margin_requirements__match_reference(
    registry, owner, chain, submit, make_update, tiers, stale, ratio, target, ramp, wait, notionals
):
    rails = guardrails(
        min_multiplier=1, max_multiplier=MAX_MULT, stale_multiplier=stale, increase_ramp=ramp
    )
    with chain.isolate():
        configure(registry, owner, PROPERTY_MARKET, tiers, ratio, rails)
        state = MarketState()
        if target is not None:
            update = make_update(PROPERTY_MARKET, multiplier=target)
            receipt = submit([update])
            state = ref.apply_update(state, rails, update, receipt.timestamp)
        view_at(chain, chain.blocks.head.timestamp + wait)
        now = chain.blocks.head.timestamp

        m = ref.multiplier_in_force(state, rails, now)
        assert registry.multiplier(PROPERTY_MARKET) == m
        assert registry.is_stale(PROPERTY_MARKET) == ref.is_stale(state, rails, now)
        for n in probe_notionals(tiers, notionals):
            mm = ref.maintenance_margin(tiers, m, n)
            im = ref.initial_margin(tiers, m, state.target, ratio, n)
            assert registry.maintenance_margin(PROPERTY_MARKET, n) == mm
            assert registry.initial_margin(PROPERTY_MARKET, n) == im
            assert im >= mm or im == n


@given(
    first=st.one_of(st.integers(WAD // 2, 12 * WAD), multipliers),
    step=st.one_of(st.integers(WAD // 2, 2 * WAD), st.sampled_from([WAD, WAD * 11 // 10])),
    max_increase=st.integers(1, 2 * WAD),
    max_decrease=st.integers(1, WAD - 1),
    wait=st.integers(1, 4000),
)
def test_submit_updates__accepts_and_rejects_like_the_reference(
    registry, owner, chain, submit, make_update, first, step, max_increase, max_decrease, wait
):
    """Two updates with random guardrails: the second is a random relative step (-50% to
    +100%) from the first; where the reference rejects, the contract reverts with its reason."""
    second = first * step // WAD
    rails = guardrails(
        min_multiplier=WAD // 2,
        max_multiplier=12 * WAD,
        stale_multiplier=WAD,
        max_increase=max_increase,
        max_decrease=max_decrease,
        increase_ramp=600,
    )
    with chain.isolate():
        configure(registry, owner, PROPERTY_MARKET, DEFAULT_TIERS, 2 * WAD, rails)
        state = MarketState()
        for step, multiplier in enumerate((first, second)):
            if step:
                chain.pending_timestamp = chain.blocks.head.timestamp + wait
            update = make_update(PROPERTY_MARKET, multiplier=multiplier)
            try:
                expected = ref.apply_update(state, rails, update, chain.pending_timestamp)
            except UpdateRejected as rejected:
                with ape.reverts(rejected.reason):
                    submit([update])
                continue
            receipt = submit([update])
            state = ref.apply_update(state, rails, update, receipt.timestamp)
            assert state == expected
            assert tuple(registry.market_state(PROPERTY_MARKET)) == (
                state.target,
                state.ramp_from,
                state.funding_rate,
                state.updated_at,
                state.observed_at,
                state.last_decrease_at,
            )
            assert registry.multiplier(PROPERTY_MARKET) == ref.multiplier_in_force(
                state, rails, receipt.timestamp
            )
