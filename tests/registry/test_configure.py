"""configure_market: what it stores, what it logs, what it refuses and who may call it."""

import re

import ape
import pytest

from offchain.protocol.margin_math import (
    Guardrails,
    MarketState,
    Tier,
    validate_guardrails,
    validate_tiers,
)
from tests.conftest import (
    DEFAULT_GUARDRAILS,
    DEFAULT_INITIAL_RATIO,
    DEFAULT_TIERS,
    MARKET_BTC,
    MARKET_ETH,
    WAD,
)
from tests.registry.conftest import (
    FIRST_MULTIPLIER,
    configure,
    guardrails,
    guardrails_of,
    state_of,
    tiers_of,
)

EDGE_TIERS = [
    Tier(0, 1),
    Tier(1, 1),  # equal rates are allowed
    Tier(2, 10**16),
    Tier(10**20, 10**16),
    Tier(10**21, 10**17),
    Tier(10**24, 10**17),
    Tier(10**27, 5 * 10**17),
    Tier(2**128 - 1, WAD),  # the largest floor and a 100% rate
]
EDGE_GUARDRAILS = guardrails(
    min_multiplier=3 * WAD,
    max_multiplier=3 * WAD,
    stale_multiplier=3 * WAD,
    max_increase=2**64 - 1,
    max_decrease=WAD - 1,
    min_decrease_interval=2**32 - 1,
    heartbeat=2**32 - 1,
    increase_ramp=2**32 - 1,
    max_funding_rate=2**47 - 1,
)


def test_configure_market__stores_schedule_ratio_and_guardrails(registry, owner):
    configure(registry, owner, MARKET_ETH, EDGE_TIERS, WAD, EDGE_GUARDRAILS)

    assert registry.is_configured(MARKET_ETH)
    assert tiers_of(registry, MARKET_ETH) == EDGE_TIERS
    assert registry.initial_ratio(MARKET_ETH) == WAD
    assert guardrails_of(registry, MARKET_ETH) == EDGE_GUARDRAILS
    # The new market has no update yet: it runs on its stale multiplier.
    assert registry.market_state(MARKET_ETH).target == 0
    assert registry.multiplier(MARKET_ETH) == 3 * WAD
    assert registry.is_stale(MARKET_ETH)


def test_configure_market__single_tier(registry, owner):
    configure(registry, owner, MARKET_ETH, [Tier(0, 2 * 10**16)], 3 * WAD)

    assert tiers_of(registry, MARKET_ETH) == [Tier(0, 2 * 10**16)]
    # 2% of 1000 USD at the stale 4x multiplier.
    assert registry.maintenance_margin(MARKET_ETH, 1000 * WAD) == 80 * WAD
    assert registry.initial_margin(MARKET_ETH, 1000 * WAD) == 240 * WAD


def test_configure_market__unconfigured_market_reads_empty(registry):
    assert not registry.is_configured(MARKET_ETH)
    assert registry.tiers(MARKET_ETH) == []
    assert registry.initial_ratio(MARKET_ETH) == 0
    assert guardrails_of(registry, MARKET_ETH) == Guardrails(*[0] * 9)


def test_configure_market__emits_new_and_zero_old_values(registry, owner):
    receipt = configure(registry, owner, MARKET_ETH, EDGE_TIERS, 3 * WAD, EDGE_GUARDRAILS)

    [log] = receipt.decode_logs(registry.MarketConfigured)
    assert log.market_id == MARKET_ETH
    assert [Tier(*t) for t in log.tiers] == EDGE_TIERS
    assert log.initial_ratio == 3 * WAD
    assert tuple(log.guardrails) == EDGE_GUARDRAILS.as_tuple()
    assert log.old_initial_ratio == 0
    assert tuple(log.old_guardrails) == (0,) * 9


def test_configure_market__reconfigure_emits_old_values(registry, owner):
    new_rails = guardrails(max_multiplier=12 * WAD, heartbeat=600, increase_ramp=300)

    receipt = configure(registry, owner, MARKET_BTC, DEFAULT_TIERS, 3 * WAD, new_rails)

    [log] = receipt.decode_logs(registry.MarketConfigured)
    assert log.market_id == MARKET_BTC
    assert log.initial_ratio == 3 * WAD
    assert tuple(log.guardrails) == new_rails.as_tuple()
    assert log.old_initial_ratio == DEFAULT_INITIAL_RATIO
    assert tuple(log.old_guardrails) == DEFAULT_GUARDRAILS.as_tuple()
    assert guardrails_of(registry) == new_rails
    assert registry.initial_ratio(MARKET_BTC) == 3 * WAD


def test_configure_market__reconfigure_keeps_state_and_new_bounds_apply(
    registry, owner, first_update, submit, make_update
):
    before = state_of(registry)
    assert before.target == FIRST_MULTIPLIER

    configure(registry, owner, MARKET_BTC, rails=guardrails(min_multiplier=3 * WAD))

    assert state_of(registry) == before
    with ape.reverts("registry: multiplier below minimum"):
        submit([make_update(multiplier=3 * WAD - 1)])
    submit([make_update(multiplier=3 * WAD)])
    assert registry.target_multiplier(MARKET_BTC) == 3 * WAD


def test_configure_market__band_moved_past_target_next_update_starts_afresh(
    registry, owner, first_update, submit, make_update
):
    # A band the last target (2x) cannot reach by the step limits: +50% gives at most 3x.
    rails = guardrails(min_multiplier=5 * WAD, stale_multiplier=6 * WAD)
    configure(registry, owner, MARKET_BTC, rails=rails)
    submit([make_update(multiplier=5 * WAD)])
    assert registry.target_multiplier(MARKET_BTC) == 5 * WAD
    # Back inside the band, the step limits bind again.
    with ape.reverts("registry: update exceeds max increase"):
        submit([make_update(multiplier=8 * WAD)])


def test_configure_market__band_lowered_below_target_allows_the_cut(
    registry, owner, first_update, submit, make_update
):
    # -10% per update from 2x could never reach a 1.5x cap.
    rails = guardrails(max_multiplier=3 * WAD // 2, stale_multiplier=3 * WAD // 2)
    configure(registry, owner, MARKET_BTC, rails=rails)
    submit([make_update(multiplier=3 * WAD // 2)])
    assert registry.target_multiplier(MARKET_BTC) == 3 * WAD // 2
    assert state_of(registry).last_decrease_at == 0  # not a keeper decrease: no interval


def test_configure_market__shorter_schedule_replaces_longer(registry, owner):
    configure(registry, owner, MARKET_BTC, [Tier(0, 10**16)])

    assert tiers_of(registry) == [Tier(0, 10**16)]
    # Above the old 1M and 10M floors the single 1% rate still applies (stale 4x).
    assert registry.maintenance_margin(MARKET_BTC, 20_000_000 * WAD) == 800_000 * WAD


def test_configure_market__not_owner(registry, stranger):
    with ape.reverts("ownable: caller is not the owner"):
        configure(registry, stranger, MARKET_ETH)
    assert not registry.is_configured(MARKET_ETH)


def test_configure_market__guardian_is_not_owner(registry, guardian):
    with ape.reverts("ownable: caller is not the owner"):
        configure(registry, guardian, MARKET_ETH)


BAD_TIERS = [
    pytest.param([], "registry: tier count must be 1 to 8", id="no-tiers"),
    pytest.param(
        [Tier(1, 10**16), Tier(10, 10**16)], "registry: first tier floor must be 0", id="floor0"
    ),
    pytest.param([Tier(0, 0), Tier(10, 10**16)], "registry: first tier rate is zero", id="rate0"),
    pytest.param(
        [Tier(0, 10**16), Tier(5, 10**16), Tier(5, 2 * 10**16)],
        "registry: tier floors not strictly increasing",
        id="equal-floors",
    ),
    pytest.param(
        [Tier(0, 10**16), Tier(50, 10**16), Tier(40, 2 * 10**16)],
        "registry: tier floors not strictly increasing",
        id="decreasing-floors",
    ),
    pytest.param(
        [Tier(0, 2 * 10**16), Tier(50, 10**16)], "registry: tier rates decreasing", id="rates-down"
    ),
    pytest.param([Tier(0, WAD + 1)], "registry: tier rate above 100%", id="rate-above-wad"),
    pytest.param(
        [Tier(0, 10**16), Tier(10, WAD + 1)], "registry: tier rate above 100%", id="last-rate"
    ),
    pytest.param(
        [Tier(0, 10**16), Tier(2**128, 10**16)], "registry: tier floor too large", id="big-floor"
    ),
]


@pytest.mark.parametrize(("tiers", "message"), BAD_TIERS)
def test_configure_market__rejects_tiers(registry, owner, tiers, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_tiers(tiers)  # the reference refuses it for the same reason
    with ape.reverts(message):
        configure(registry, owner, MARKET_ETH, tiers)
    assert not registry.is_configured(MARKET_ETH)


@pytest.mark.parametrize(
    ("ratio", "message"),
    [
        pytest.param(WAD - 1, "registry: initial ratio below 1", id="below-1"),
        pytest.param(0, "registry: initial ratio below 1", id="zero"),
        pytest.param(2**120, "registry: initial ratio too large", id="too-large"),
    ],
)
def test_configure_market__rejects_initial_ratio(registry, owner, ratio, message):
    with ape.reverts(message):
        configure(registry, owner, MARKET_ETH, initial_ratio=ratio)
    assert not registry.is_configured(MARKET_ETH)


BAD_GUARDRAILS = [
    ({"min_multiplier": 0}, "registry: min multiplier is zero"),
    (
        {"min_multiplier": 5 * WAD, "max_multiplier": 5 * WAD - 1},
        "registry: min multiplier above max",
    ),
    (
        {"max_multiplier": 2**64, "stale_multiplier": 4 * WAD},
        "registry: max multiplier too large",
    ),
    ({"stale_multiplier": WAD - 1}, "registry: stale multiplier outside [min, max]"),
    ({"stale_multiplier": 10 * WAD + 1}, "registry: stale multiplier outside [min, max]"),
    ({"max_increase": 0}, "registry: max increase out of range"),
    ({"max_increase": 2**64}, "registry: max increase out of range"),
    ({"max_decrease": 0}, "registry: max decrease out of range"),
    ({"max_decrease": WAD}, "registry: max decrease out of range"),
    ({"heartbeat": 0}, "registry: heartbeat out of range"),
    ({"heartbeat": 2**32, "increase_ramp": 0}, "registry: heartbeat out of range"),
    ({"min_decrease_interval": 2**32}, "registry: decrease interval too large"),
    ({"increase_ramp": 7201}, "registry: increase ramp longer than heartbeat"),
    ({"max_funding_rate": 2**47}, "registry: funding bound too large"),
]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [pytest.param(o, m, id="-".join(o)) for o, m in BAD_GUARDRAILS],
)
def test_configure_market__rejects_guardrails(registry, owner, overrides, message):
    rails = guardrails(**overrides)
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_guardrails(rails)  # the reference refuses it for the same reason
    with ape.reverts(message):
        configure(registry, owner, MARKET_ETH, rails=rails)
    assert not registry.is_configured(MARKET_ETH)


def test_configure_market__rejection_leaves_existing_market_unchanged(
    registry, owner, first_update
):
    before = (tiers_of(registry), registry.initial_ratio(MARKET_BTC), guardrails_of(registry))
    state = state_of(registry)

    with ape.reverts("registry: min multiplier above max"):
        configure(registry, owner, MARKET_BTC, rails=guardrails(min_multiplier=11 * WAD))

    after = (tiers_of(registry), registry.initial_ratio(MARKET_BTC), guardrails_of(registry))
    assert after == before
    assert state_of(registry) == state
    assert state != MarketState()
