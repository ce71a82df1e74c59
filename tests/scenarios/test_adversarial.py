"""Scenario batches the registry must refuse whole, one defect each: signatures, replay, time,
shape and guardrails, the step limit and when it starts afresh, the risk registry's pause. The
honest version of the same batch is accepted afterwards where that shows the refusal came from
the one defect."""

import dataclasses

import ape
import pytest
from eth_account import Account

from offchain.protocol.signing import sign_batch, to_high_s
from tests.feature_system import (
    GROUP,
    MARKET_BTC,
    MARKET_ETH,
    MARKET_XRP,
    MAX_SHOCKS,
    MAX_STEPS,
    SCENARIO_HEARTBEAT,
    group_config,
    pack_shocks,
    scenario_update,
)

ROWS = [[-1_000, 1_000], [-1_100, 1_100], [-1_500, 1_500]]


@pytest.fixture
def update(chain):
    return scenario_update(chain.pending_timestamp, ROWS)


def sign(scenarios, chain, updates, key, chain_id=None):
    return sign_batch(updates, key.key, chain_id or chain.chain_id, scenarios.address)


def state_of(scenarios):
    return scenarios.group(GROUP)[1]


# Signatures


def test_submit_scenarios__forged_signature(scenarios, submit, update, chain, keeper):
    """A keeper's signature over other shocks does not carry over to these."""
    signed_for = dataclasses.replace(update, shocks=(pack_shocks([-999, 1000]), *update.shocks[1:]))
    signature = sign(scenarios, chain, [signed_for], keeper)

    with ape.reverts("quorum: signer is not a keeper"):
        submit([update], signatures=[signature])
    assert state_of(scenarios).updated_at == 0
    submit([signed_for], signatures=[signature])


def test_submit_scenarios__signed_for_another_chain(scenarios, submit, update, chain, keeper):
    with ape.reverts("quorum: signer is not a keeper"):
        submit([update], signatures=[sign(scenarios, chain, [update], keeper, chain.chain_id + 1)])


def test_submit_scenarios__non_keeper(submit, update):
    with ape.reverts("quorum: signer is not a keeper"):
        submit([update], keys=[Account.from_key(b"\x77" * 32)])


def test_submit_scenarios__removed_keeper(system, submit, update, keeper, owner, keepers):
    system.registry.remove_keeper(keeper.address, sender=owner)
    with ape.reverts("quorum: signer is not a keeper"):
        submit([update])
    submit([update], keys=[keepers[1]])


def test_submit_scenarios__below_threshold(system, submit, update, owner, keepers):
    system.registry.set_signer_threshold(2, sender=owner)
    with ape.reverts("quorum: not enough signatures"):
        submit([update], keys=keepers[:1])
    submit([update], keys=keepers[:2])


def test_submit_scenarios__duplicate_signer(
    system, scenarios, submit, update, chain, owner, keeper
):
    system.registry.set_signer_threshold(2, sender=owner)
    signature = sign(scenarios, chain, [update], keeper)
    with ape.reverts("quorum: duplicate signer"):
        submit([update], signatures=[signature, signature])


def test_submit_scenarios__high_s(scenarios, submit, update, chain, keeper):
    low_s = sign(scenarios, chain, [update], keeper)
    with ape.reverts("ecdsa: invalid signature `s` value"):
        submit([update], signatures=[to_high_s(low_s)])
    submit([update], signatures=[low_s])


def test_submit_scenarios__compact_signature(scenarios, submit, update, chain, keeper):
    good = sign(scenarios, chain, [update], keeper)
    vs = int.from_bytes(good[32:64], "big") | ((good[64] - 27) << 255)
    with ape.reverts("quorum: signature must be 65 bytes"):
        submit([update], signatures=[good[:32] + vs.to_bytes(32, "big")])


def test_submit_scenarios__replayed_batch(scenarios, submit, update, chain, keeper):
    signature = sign(scenarios, chain, [update], keeper)
    submit([update], signatures=[signature])
    chain.mine(deltatime=60)
    with ape.reverts("scenarios: observed_at not after the last update"):
        submit([update], signatures=[signature])


def test_submit_scenarios__empty_batch(scenarios, relayer):
    with ape.reverts("scenarios: empty batch"):
        scenarios.submit_scenarios([], [], sender=relayer)


def test_submit_scenarios__risk_registry_paused(system, submit, update, owner):
    system.registry.pause(sender=owner)
    with ape.reverts("quorum: keeper updates paused"):
        submit([update])
    system.registry.unpause(sender=owner)
    submit([update])


# Time


def test_submit_scenarios__past_deadline(submit, chain):
    now = chain.pending_timestamp
    with ape.reverts("scenarios: update past its deadline"):
        submit([scenario_update(now, ROWS, deadline=now - 1)])
    edge = chain.pending_timestamp  # a deadline and observed_at of the block's own second
    submit([scenario_update(edge, ROWS, observed_at=edge, deadline=edge)])


def test_submit_scenarios__observed_in_the_future(submit, chain):
    now = chain.pending_timestamp
    with ape.reverts("scenarios: observed_at in the future"):
        submit([scenario_update(now, ROWS, observed_at=now + 60)])


def test_submit_scenarios__observed_at_not_increasing(submit, chain):
    first = submit([scenario_update(chain.pending_timestamp, ROWS)])
    observed = first.timestamp - 1
    chain.mine(deltatime=60)
    now = chain.pending_timestamp
    for earlier in (observed, observed - 1):
        with ape.reverts("scenarios: observed_at not after the last update"):
            submit([scenario_update(now, ROWS, observed_at=earlier)])
    submit([scenario_update(now, ROWS, observed_at=observed + 1)])


def test_submit_scenarios__same_group_twice_in_a_block(submit, chain):
    now = chain.pending_timestamp
    twice = [
        scenario_update(now, ROWS, observed_at=now - 2),
        scenario_update(now, ROWS, observed_at=now - 1),
    ]
    with ape.reverts("scenarios: group already updated in this block"):
        submit(twice)


# Shape and bounds


def test_submit_scenarios__unknown_group(submit, chain):
    with ape.reverts("scenarios: unknown group"):
        submit([scenario_update(chain.pending_timestamp, ROWS, group_id=GROUP + 1)])


@pytest.mark.parametrize("count", [0, 17])
def test_submit_scenarios__count_out_of_range(submit, chain, count):
    with ape.reverts("scenarios: count must be 1 to 16"):
        submit([scenario_update(chain.pending_timestamp, ROWS, count=count)])


def test_submit_scenarios__one_word_per_market(submit, chain):
    with ape.reverts("scenarios: one shock word per market"):
        submit([scenario_update(chain.pending_timestamp, ROWS[:2])])


@pytest.mark.parametrize("market", range(3))
@pytest.mark.parametrize("sign_", [1, -1])
def test_submit_scenarios__shock_beyond_its_bound(submit, chain, market, sign_):
    rows = [list(r) for r in ROWS]
    rows[market][1] = sign_ * (MAX_SHOCKS[market] + 1)
    with ape.reverts("scenarios: shock beyond its bound"):
        submit([scenario_update(chain.pending_timestamp, rows)])
    rows[market][1] = sign_ * MAX_SHOCKS[market]  # the bound itself is allowed
    submit([scenario_update(chain.pending_timestamp, rows)])


def test_submit_scenarios__shock_in_a_slot_beyond_the_count(submit, chain):
    rows = [list(r) for r in ROWS]
    rows[2] = rows[2] + [0, 0, 1]  # slot 4 of SOL, count 2
    with ape.reverts("scenarios: shock beyond the scenario count"):
        submit([scenario_update(chain.pending_timestamp, rows, count=2)])
    # The same slots under a count that covers them are accepted.
    submit([scenario_update(chain.pending_timestamp, rows, count=5)])


# Step limit


def landed_with(submit, chain, rows):
    return submit([scenario_update(chain.pending_timestamp, rows)]).timestamp


def moved(rows, market, k, delta):
    out = [list(r) for r in rows]
    out[market][k] += delta
    return out


@pytest.mark.parametrize("market", range(3))
def test_submit_scenarios__step_beyond_the_limit(submit, chain, market):
    landed_with(submit, chain, ROWS)
    chain.mine(deltatime=60)
    for delta in (MAX_STEPS[market] + 1, -(MAX_STEPS[market] + 1)):
        with ape.reverts("scenarios: shock moved beyond the step limit"):
            submit([scenario_update(chain.pending_timestamp, moved(ROWS, market, 0, delta))])
    submit([scenario_update(chain.pending_timestamp, moved(ROWS, market, 0, MAX_STEPS[market]))])


def test_submit_scenarios__stale_group_starts_afresh(scenarios, submit, chain):
    landed = landed_with(submit, chain, ROWS)
    jump = moved(ROWS, 0, 1, MAX_STEPS[0] + 1)
    # The step binds up to the last second of the heartbeat...
    chain.pending_timestamp = landed + SCENARIO_HEARTBEAT
    with ape.reverts("scenarios: shock moved beyond the step limit"):
        submit([scenario_update(chain.pending_timestamp, jump)])
    # ...and no longer once the scenarios are stale.
    chain.pending_timestamp = landed + SCENARIO_HEARTBEAT + 1
    submit([scenario_update(chain.pending_timestamp, jump)])
    assert scenarios.group(GROUP)[1].shocks[0] == pack_shocks(jump[0])


def test_submit_scenarios__count_lowered_while_in_force(scenarios, submit, chain):
    """Dropping a scenario would shed its loss past the step limit: refused while the previous
    scenarios are in force, accepted once they are stale."""
    landed = landed_with(submit, chain, [[*r, -2_000] for r in ROWS])  # count 3
    chain.mine(deltatime=60)
    with ape.reverts("scenarios: count lowered while scenarios are in force"):
        submit([scenario_update(chain.pending_timestamp, ROWS)])
    chain.mine(timestamp=landed + SCENARIO_HEARTBEAT + 1)
    submit([scenario_update(chain.pending_timestamp, ROWS)])
    assert scenarios.group(GROUP)[1].count == 2


def test_submit_scenarios__new_scenario_starts_anywhere_old_ones_still_step(
    scenarios, submit, chain
):
    landed_with(submit, chain, ROWS)
    chain.mine(deltatime=60)
    # a jump on an existing scenario is refused, even with one more scenario added
    with ape.reverts("scenarios: shock moved beyond the step limit"):
        submit(
            [
                scenario_update(
                    chain.pending_timestamp, [[*r, 0] for r in moved(ROWS, 2, 0, MAX_STEPS[2] + 1)]
                )
            ]
        )
    # the added scenario itself may lie anywhere inside the bounds
    far = [[*r, -b] for r, b in zip(ROWS, MAX_SHOCKS, strict=True)]
    submit([scenario_update(chain.pending_timestamp, far)])
    assert scenarios.group(GROUP)[1].count == 3


def test_submit_scenarios__lowered_bound_starts_afresh(scenarios, submit, chain, owner):
    """A group reconfigured below its previous shocks drops them: the next update lies inside the
    new bound however far that is from the old shocks."""
    landed_with(submit, chain, [[2_500, -2_500], [0, 0], [0, 0]])
    scenarios.configure_group(GROUP, group_config(max_shocks=(1_000, 3_500, 4_500)), sender=owner)
    chain.mine(deltatime=60)
    afresh = [[-1_000, 1_000], [0, 0], [0, 0]]  # 3,500 bps from the old shocks, step 1,000
    landed_with(submit, chain, afresh)
    assert scenarios.group(GROUP)[1].shocks[0] == pack_shocks(afresh[0])


def test_submit_scenarios__replayed_after_a_reconfiguration(
    scenarios, engine, submit, chain, keeper, owner
):
    """A landed batch stays spent when governance reconfigures its group. Its words are per
    market position: relayed again on the group reconfigured with XRP in SOL's place, it would
    give XRP the shocks the keepers signed for SOL."""
    update = scenario_update(chain.pending_timestamp, ROWS)
    signature = sign(scenarios, chain, [update], keeper)
    submit([update], signatures=[signature])
    scenarios.configure_group(
        GROUP, group_config(markets=(MARKET_BTC, MARKET_ETH, MARKET_XRP)), sender=owner
    )
    chain.mine(deltatime=60)
    with ape.reverts("scenarios: observed_at not after the last update"):
        submit([update], signatures=[signature])
    assert engine.market_scenarios(MARKET_XRP) == (GROUP, 0)
    # The keepers' next observation applies to the group as it now is.
    fresh = scenario_update(chain.pending_timestamp, ROWS)
    submit([fresh])
    assert engine.market_scenarios(MARKET_XRP) == (GROUP, pack_shocks(ROWS[2]))
