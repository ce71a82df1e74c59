"""submit_scenarios: an accepted batch is stored, logged and pushed into the engine; is_fresh
over time; the EIP-712 digest equals the signing module's."""

from offchain.protocol.signing import batch_digest
from tests.conftest import DEFAULT_GUARDRAILS, DEFAULT_INITIAL_RATIO, DEFAULT_TIERS, tiers_arg
from tests.feature_system import (
    FLOOR,
    GROUP,
    GROUP_INITIAL_RATIO,
    GROUP_MARKETS,
    MARKET_XRP,
    MODEL_HASH,
    RESIDUAL,
    SCENARIO_HEARTBEAT,
    group_config,
    pack_shocks,
    scenario_update,
)

# K = 4 joint scenarios: a crash, a rally, and two relative moves (basis points).
ROWS = [[-1_000, 1_000, -200, 300], [-1_100, 1_100, 100, -100], [-1_500, 1_500, 0, 200]]


def test_submit_scenarios__stores_logs_and_pushes_into_the_engine(
    scenarios, engine, submit, chain, relayer
):
    update = scenario_update(chain.pending_timestamp, ROWS)
    receipt = submit([update])
    landed = receipt.timestamp
    words = [pack_shocks(r) for r in ROWS]

    _, state = scenarios.group(GROUP)
    assert (state.count, list(state.shocks), state.observed_at, state.updated_at) == (
        4,
        words,
        update.observed_at,
        landed,
    )
    [log] = receipt.decode_logs(scenarios.ScenariosUpdated)
    assert (log.group_id, log.count, list(log.shocks), log.observed_at) == (
        GROUP,
        4,
        words,
        update.observed_at,
    )
    assert log.fresh_until == landed + SCENARIO_HEARTBEAT
    assert log.model_hash == MODEL_HASH
    [relayed] = receipt.decode_logs(scenarios.ScenarioBatchRelayed)
    assert relayed.relayer == relayer.address
    assert relayed.digest == batch_digest([update], chain.chain_id, scenarios.address)
    assert (relayed.updates, relayed.signers) == (1, 1)

    for market_id, word in zip(GROUP_MARKETS, words, strict=True):
        assert engine.market_scenarios(market_id) == (GROUP, word)
    assert engine.scenario_group(GROUP) == (
        4,
        landed + SCENARIO_HEARTBEAT,
        RESIDUAL,
        FLOOR,
        GROUP_INITIAL_RATIO,
    )
    assert scenarios.is_fresh(GROUP)


def test_submit_scenarios__negative_extremes_round_trip(scenarios, engine, submit, chain, owner):
    """-32,767 and +32,767 bps (the widest bound) and all 16 slots survive packing and the
    push."""
    scenarios.configure_group(
        GROUP, group_config(max_shocks=(2**15 - 1,) * 3, max_steps=(2**16 - 2,) * 3), sender=owner
    )
    chain.mine(deltatime=60)
    rows = [[(-1) ** k * (2**15 - 1) for k in range(16)], list(range(-8, 8)), [1] * 16]
    submit([scenario_update(chain.pending_timestamp, rows)])
    for market_id, row in zip(GROUP_MARKETS, rows, strict=True):
        group, word = engine.market_scenarios(market_id)
        assert group == GROUP
        assert word == pack_shocks(row)
        unpacked = [((word >> (16 * k)) & 0xFFFF) for k in range(16)]
        assert [z - 2**16 if z >= 2**15 else z for z in unpacked] == row
    assert engine.scenario_group(GROUP)[0] == 16


def test_submit_scenarios__two_groups_and_two_signers_in_one_batch(
    system, scenarios, engine, submit, chain, owner, keepers
):
    system.registry.configure_market(
        5,
        tiers_arg(DEFAULT_TIERS),
        DEFAULT_INITIAL_RATIO,
        DEFAULT_GUARDRAILS.as_tuple(),
        sender=owner,
    )
    scenarios.configure_group(
        2,
        group_config(markets=(MARKET_XRP, 5), max_shocks=(5_000, 5_000), max_steps=(1, 1)),
        sender=owner,
    )
    system.registry.set_signer_threshold(2, sender=owner)
    now = chain.pending_timestamp
    updates = [scenario_update(now, ROWS), scenario_update(now, [[-4_000], [4_000]], group_id=2)]
    assert scenarios.batch_digest([u.as_tuple() for u in updates]) == batch_digest(
        updates, chain.chain_id, scenarios.address
    )

    receipt = submit(updates, keys=keepers[:2])
    [relayed] = receipt.decode_logs(scenarios.ScenarioBatchRelayed)
    assert (relayed.updates, relayed.signers) == (2, 2)
    assert engine.market_scenarios(MARKET_XRP) == (2, pack_shocks([-4_000]))
    assert engine.market_scenarios(5) == (2, pack_shocks([4_000]))
    assert engine.scenario_group(2)[0] == 1
    assert engine.scenario_group(GROUP)[0] == 4


def test_batch_digest__equals_the_signing_module_for_any_batch(scenarios, chain):
    now = chain.pending_timestamp
    batches = [
        [scenario_update(now, ROWS)],
        [scenario_update(now, [[1], [2], [3]], count=16), scenario_update(now, [[7]], group_id=9)],
        [scenario_update(now, [[0]] * 8, group_id=255, observed_at=0, deadline=2**256 - 1)],
    ]
    for updates in batches:
        assert scenarios.batch_digest([u.as_tuple() for u in updates]) == batch_digest(
            updates, chain.chain_id, scenarios.address
        )


def test_is_fresh__over_time(scenarios, engine, submit, chain):
    assert not scenarios.is_fresh(GROUP)
    landed = submit([scenario_update(chain.pending_timestamp, ROWS)]).timestamp
    assert scenarios.is_fresh(GROUP)
    chain.mine(timestamp=landed + SCENARIO_HEARTBEAT)
    assert scenarios.is_fresh(GROUP)  # the last second of the heartbeat
    assert engine.scenario_group(GROUP)[1] == chain.blocks.head.timestamp
    chain.mine(timestamp=landed + SCENARIO_HEARTBEAT + 1)
    assert not scenarios.is_fresh(GROUP)
    # A new update makes it fresh again.
    submit([scenario_update(chain.pending_timestamp, ROWS)])
    assert scenarios.is_fresh(GROUP)
