"""configure_group: governance of scenario groups, every refusal, and what the engine receives."""

import ape
import pytest

from tests.conftest import DEFAULT_GUARDRAILS, DEFAULT_INITIAL_RATIO, DEFAULT_TIERS, WAD, tiers_arg
from tests.feature_system import (
    FLOOR,
    GROUP,
    GROUP_INITIAL_RATIO,
    GROUP_MARKETS,
    MARKET_BTC,
    MARKET_ETH,
    MARKET_SOL,
    MARKET_XRP,
    MAX_SHOCKS,
    MAX_STEPS,
    RESIDUAL,
    SCENARIO_HEARTBEAT,
    group_config,
    pack_shocks,
    scenario_update,
)

UNCONFIGURED = 99


def test_configure_group__stores_the_group_and_pushes_it_to_the_engine(scenarios, engine, chain):
    config, state = scenarios.group(GROUP)
    assert list(config.markets) == list(GROUP_MARKETS)
    assert list(config.max_shocks) == list(MAX_SHOCKS)
    assert list(config.max_steps) == list(MAX_STEPS)
    assert (config.heartbeat, config.residual, config.floor, config.initial_ratio) == (
        SCENARIO_HEARTBEAT,
        RESIDUAL,
        FLOOR,
        GROUP_INITIAL_RATIO,
    )
    assert (state.count, list(state.shocks), state.updated_at) == (0, [], 0)
    # the first update must be observed after the configuration's block
    configured = scenarios.GroupConfigured.query("block_number").block_number.iloc[-1]
    assert state.observed_at == chain.blocks[int(configured)].timestamp
    for market_id in GROUP_MARKETS:
        assert scenarios.group_of(market_id) == GROUP
        assert engine.market_scenarios(market_id) == (GROUP, 0)
    assert scenarios.group_of(MARKET_XRP) == 0
    assert engine.market_scenarios(MARKET_XRP) == (0, 0)
    # No scenarios yet: the engine holds the parameters, count 0 (no portfolio credit).
    assert engine.scenario_group(GROUP) == (0, 0, RESIDUAL, FLOOR, GROUP_INITIAL_RATIO)
    assert not scenarios.is_fresh(GROUP)


def test_configure_group__logs_the_config_and_the_markets_removed(scenarios, owner):
    receipt = scenarios.configure_group(
        GROUP,
        group_config(markets=(MARKET_BTC, MARKET_ETH), max_shocks=(100, 200), max_steps=(10, 20)),
        sender=owner,
    )
    [log] = receipt.decode_logs(scenarios.GroupConfigured)
    assert log.group_id == GROUP
    markets, max_shocks, max_steps, heartbeat = log.config[:4]
    assert (list(markets), list(max_shocks), list(max_steps)) == ([1, 2], [100, 200], [10, 20])
    assert heartbeat == SCENARIO_HEARTBEAT
    # `removed` is also the log object's own reorg flag: read the argument by name.
    assert list(log.event_arguments["removed"]) == [MARKET_SOL]


def test_configure_group__a_market_leaves_the_group_and_may_join_another(
    scenarios, engine, owner, system, submit, chain
):
    submit([scenario_update(chain.pending_timestamp, [[-500], [-600], [-900]])])
    assert engine.market_scenarios(MARKET_SOL) == (GROUP, pack_shocks([-900]))

    scenarios.configure_group(
        GROUP,
        group_config(
            markets=(MARKET_BTC, MARKET_ETH), max_shocks=MAX_SHOCKS[:2], max_steps=MAX_STEPS[:2]
        ),
        sender=owner,
    )
    assert scenarios.group_of(MARKET_SOL) == 0
    assert engine.market_scenarios(MARKET_SOL) == (0, 0)  # group and shocks cleared
    # Reconfiguring drops the scenarios in force: no credit until the keepers' next update.
    assert engine.market_scenarios(MARKET_BTC) == (GROUP, 0)
    assert engine.scenario_group(GROUP)[0] == 0
    assert not scenarios.is_fresh(GROUP)
    assert scenarios.group(GROUP)[1].updated_at == 0

    scenarios.configure_group(
        2,
        group_config(
            markets=(MARKET_SOL, MARKET_XRP), max_shocks=(4_000, 4_000), max_steps=(500, 500)
        ),
        sender=owner,
    )
    assert scenarios.group_of(MARKET_SOL) == scenarios.group_of(MARKET_XRP) == 2
    assert engine.market_scenarios(MARKET_SOL) == (2, 0)
    assert engine.market_scenarios(MARKET_XRP) == (2, 0)
    assert engine.market_scenarios(MARKET_BTC) == (GROUP, 0)


def test_remove_group__markets_leave_and_accounts_fall_back(
    scenarios, engine, owner, submit, chain, stranger
):
    submit([scenario_update(chain.pending_timestamp, [[-500], [-600], [-900]])])
    assert engine.scenario_group(GROUP)[0] == 1
    with ape.reverts("ownable: caller is not the owner"):
        scenarios.remove_group(GROUP, sender=stranger)
    receipt = scenarios.remove_group(GROUP, sender=owner)
    [log] = receipt.decode_logs(scenarios.GroupRemoved)
    assert list(log.event_arguments["removed"]) == list(GROUP_MARKETS)
    for market_id in GROUP_MARKETS:
        assert scenarios.group_of(market_id) == 0
        assert engine.market_scenarios(market_id) == (0, 0)
    assert engine.scenario_group(GROUP)[0] == 0 and not scenarios.is_fresh(GROUP)
    assert len(scenarios.group(GROUP)[0].markets) == 0
    with ape.reverts("scenarios: unknown group"):
        scenarios.remove_group(GROUP, sender=owner)
    with ape.reverts("scenarios: unknown group"):
        submit([scenario_update(chain.pending_timestamp, [[-500], [-600], [-900]])])
    # its markets may join another group at once
    scenarios.configure_group(
        2, group_config(markets=(MARKET_SOL, MARKET_XRP), max_shocks=(4_000, 4_000),
                        max_steps=(500, 500)), sender=owner,
    )  # fmt: skip
    assert scenarios.group_of(MARKET_SOL) == 2


def test_configure_group__only_the_owner(scenarios, stranger):
    with ape.reverts("ownable: caller is not the owner"):
        scenarios.configure_group(2, group_config(), sender=stranger)


def test_engine_sync__only_the_scenario_registry(engine, stranger):
    with ape.reverts("engine: caller is not the scenario registry"):
        engine.sync_scenario_group(2, [MARKET_XRP], [], 0, sender=stranger)
    with ape.reverts("engine: caller is not the scenario registry"):
        engine.sync_scenarios(GROUP, 1, 2**40 - 1, list(GROUP_MARKETS), [1, 1, 1], sender=stranger)


@pytest.mark.parametrize(
    ("group_id", "overrides", "message"),
    [
        (0, {}, "scenarios: group id must be 1 to 255"),
        (256, {}, "scenarios: group id must be 1 to 255"),
        (
            GROUP,
            {"markets": (MARKET_BTC,), "max_shocks": (1,), "max_steps": (1,)},
            "scenarios: a group needs two markets or more",
        ),
        (GROUP, {"max_shocks": MAX_SHOCKS[:2]}, "scenarios: one shock bound and step per market"),
        (GROUP, {"max_steps": (*MAX_STEPS, 1)}, "scenarios: one shock bound and step per market"),
        (GROUP, {"heartbeat": 0}, "scenarios: heartbeat out of range"),
        (GROUP, {"heartbeat": 2**32}, "scenarios: heartbeat out of range"),
        (GROUP, {"residual": WAD + 1}, "scenarios: residual and floor at most 100%"),
        (GROUP, {"floor": WAD + 1}, "scenarios: residual and floor at most 100%"),
        (GROUP, {"initial_ratio": WAD - 1}, "scenarios: initial ratio out of range"),
        (GROUP, {"initial_ratio": 2**64}, "scenarios: initial ratio out of range"),
        (
            GROUP,
            {"markets": (MARKET_BTC, UNCONFIGURED, MARKET_SOL)},
            "scenarios: market not in the risk registry",
        ),
        (GROUP, {"max_shocks": (3_000, 0, 4_500)}, "scenarios: shock bound out of range"),
        (GROUP, {"max_shocks": (3_000, 2**15, 4_500)}, "scenarios: shock bound out of range"),
        (GROUP, {"max_steps": (1_000, 1_000, 0)}, "scenarios: step limit out of range"),
        (GROUP, {"max_steps": (2**16 - 1, 1_000, 1_000)}, "scenarios: step limit out of range"),
        (
            GROUP,
            {"markets": (MARKET_BTC, MARKET_ETH, MARKET_BTC)},
            "scenarios: market listed twice",
        ),
        (2, {}, "scenarios: market in another group"),
    ],
    ids=[
        "group-0",
        "group-256",
        "one-market",
        "fewer-bounds",
        "more-steps",
        "heartbeat-0",
        "heartbeat-2**32",
        "residual>1",
        "floor>1",
        "initial<1",
        "initial-2**64",
        "unconfigured-market",
        "bound-0",
        "bound-2**15",
        "step-0",
        "step-2**16-1",
        "listed-twice",
        "other-group",
    ],
)
def test_configure_group__refuses(scenarios, owner, group_id, overrides, message):
    with ape.reverts(message):
        scenarios.configure_group(group_id, group_config(**overrides), sender=owner)


def test_configure_group__widest_accepted_bounds(scenarios, owner, registry_of):
    """The edges of every range are accepted: a shock bound of 2**15 - 1, a step of twice
    that, a 2**32 - 1 heartbeat, residual and floor of 100%, an initial ratio of 2**64 - 1,
    group 255 and markets only configured in the risk registry (not listed in the engine)."""
    registry_of.configure_market(
        5,
        tiers_arg(DEFAULT_TIERS),
        DEFAULT_INITIAL_RATIO,
        DEFAULT_GUARDRAILS.as_tuple(),
        sender=owner,
    )
    scenarios.configure_group(
        255,
        group_config(
            markets=(MARKET_XRP, 5),
            max_shocks=(2**15 - 1,) * 2,
            max_steps=(2**16 - 2,) * 2,
            heartbeat=2**32 - 1,
            residual=WAD,
            floor=WAD,
            initial_ratio=2**64 - 1,
        ),
        sender=owner,
    )
    assert scenarios.group_of(5) == scenarios.group_of(MARKET_XRP) == 255


@pytest.fixture
def registry_of(system):
    return system.registry
