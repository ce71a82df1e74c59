"""submit_updates: accepted batches, what they store (checked against the reference) and log."""

import ape
import pytest

from offchain.protocol.margin_math import MarketState, apply_update
from offchain.protocol.signing import batch_digest
from tests.conftest import DEFAULT_GUARDRAILS, MARKET_BTC, MARKET_ETH, WAD
from tests.registry.conftest import FIRST_MULTIPLIER, configure, land_at, state_of

MAX_FUNDING = DEFAULT_GUARDRAILS.max_funding_rate


@pytest.mark.parametrize(
    "multiplier",
    [
        pytest.param(DEFAULT_GUARDRAILS.min_multiplier, id="min"),
        pytest.param(DEFAULT_GUARDRAILS.max_multiplier, id="max"),
        pytest.param(7 * WAD + 123, id="far-above-stale-and-max-increase"),
    ],
)
def test_submit_updates__first_update_sets_any_multiplier_in_range(
    registry, submit, make_update, multiplier
):
    update = make_update(multiplier=multiplier, funding_rate=-(10**11))

    receipt = submit([update])

    expected = apply_update(MarketState(), DEFAULT_GUARDRAILS, update, receipt.timestamp)
    assert state_of(registry) == expected
    assert registry.target_multiplier(MARKET_BTC) == multiplier
    assert registry.multiplier(MARKET_BTC) == multiplier  # no ramp: in force at once
    assert registry.funding_rate(MARKET_BTC) == -(10**11)
    assert registry.last_update(MARKET_BTC) == (update.observed_at, receipt.timestamp)
    assert not registry.is_stale(MARKET_BTC)


def test_submit_updates__relayed_by_a_stranger(registry, submit, make_update, stranger):
    receipt = submit([make_update(multiplier=3 * WAD)], sender=stranger)

    assert registry.target_multiplier(MARKET_BTC) == 3 * WAD
    [log] = receipt.decode_logs(registry.RiskBatchRelayed)
    assert log.relayer == stranger.address


def test_submit_updates__emits_risk_updated_and_batch_relayed(
    registry, submit, make_update, relayer, chain
):
    update = make_update(multiplier=3 * WAD, funding_rate=7 * 10**11, model_hash=b"\xab" * 32)

    receipt = submit([update])

    [risk] = receipt.decode_logs(registry.RiskUpdated)
    assert risk.market_id == MARKET_BTC
    assert risk.old_multiplier == 0
    assert risk.new_multiplier == 3 * WAD
    assert risk.old_funding_rate == 0
    assert risk.new_funding_rate == 7 * 10**11
    assert risk.observed_at == update.observed_at
    assert bytes(risk.model_hash) == b"\xab" * 32
    [batch] = receipt.decode_logs(registry.RiskBatchRelayed)
    assert batch.relayer == relayer.address
    assert bytes(batch.digest) == batch_digest([update], chain.chain_id, registry.address)
    assert batch.updates == 1
    assert batch.signers == 1


def test_submit_updates__event_carries_previous_values(registry, submit, make_update, first_update):
    first, _ = first_update
    update = make_update(multiplier=25 * WAD // 10, funding_rate=-MAX_FUNDING)

    receipt = submit([update])

    [risk] = receipt.decode_logs(registry.RiskUpdated)
    assert risk.old_multiplier == FIRST_MULTIPLIER
    assert risk.new_multiplier == 25 * WAD // 10
    assert risk.old_funding_rate == first.funding_rate
    assert risk.new_funding_rate == -MAX_FUNDING


def test_submit_updates__second_update_matches_reference(
    registry, submit, make_update, first_update
):
    first, first_receipt = first_update
    state = apply_update(MarketState(), DEFAULT_GUARDRAILS, first, first_receipt.timestamp)
    update = make_update(multiplier=27 * WAD // 10, funding_rate=-3)

    receipt = submit([update])

    assert state_of(registry) == apply_update(state, DEFAULT_GUARDRAILS, update, receipt.timestamp)


def test_submit_updates__threshold_three_with_three_distinct_signers(
    registry, owner, keepers, submit, make_update
):
    for signer in keepers[1:3]:
        registry.add_keeper(signer.address, sender=owner)
    registry.set_signer_threshold(3, sender=owner)

    receipt = submit([make_update(multiplier=5 * WAD)], keys=[keepers[2], keepers[0], keepers[1]])

    assert registry.target_multiplier(MARKET_BTC) == 5 * WAD
    [batch] = receipt.decode_logs(registry.RiskBatchRelayed)
    assert batch.signers == 3


def test_submit_updates__extra_keeper_signatures_above_threshold_count(
    registry, owner, keepers, submit, make_update
):
    for signer in keepers[1:4]:
        registry.add_keeper(signer.address, sender=owner)
    registry.set_signer_threshold(2, sender=owner)

    receipt = submit([make_update()], keys=keepers[:4])

    [batch] = receipt.decode_logs(registry.RiskBatchRelayed)
    assert batch.signers == 4


def test_submit_updates__increase_of_exactly_max_increase(
    registry, submit, make_update, first_update
):
    submit([make_update(multiplier=FIRST_MULTIPLIER * 3 // 2)])  # +50%

    assert registry.target_multiplier(MARKET_BTC) == 3 * WAD


def test_submit_updates__decrease_of_exactly_max_decrease_twice_an_interval_apart(
    registry, submit, make_update, first_update, chain
):
    receipt = submit([make_update(multiplier=18 * WAD // 10)])  # -10%
    assert registry.market_state(MARKET_BTC).last_decrease_at == receipt.timestamp

    land_at(chain, receipt.timestamp + DEFAULT_GUARDRAILS.min_decrease_interval)
    second = submit([make_update(multiplier=162 * WAD // 100)])  # -10% again

    assert registry.target_multiplier(MARKET_BTC) == 162 * WAD // 100
    assert registry.market_state(MARKET_BTC).last_decrease_at == second.timestamp


def test_submit_updates__increase_does_not_restart_the_decrease_interval(
    registry, submit, make_update, first_update, chain
):
    decrease = submit([make_update(multiplier=19 * WAD // 10)])
    submit([make_update(multiplier=2 * WAD)])

    assert registry.market_state(MARKET_BTC).last_decrease_at == decrease.timestamp


@pytest.mark.parametrize("funding_rate", [MAX_FUNDING, -MAX_FUNDING, -1, 0])
def test_submit_updates__funding_at_its_bound_round_trips(
    registry, submit, make_update, funding_rate
):
    submit([make_update(funding_rate=funding_rate)])

    assert registry.funding_rate(MARKET_BTC) == funding_rate
    assert registry.market_state(MARKET_BTC).funding_rate == funding_rate


def test_submit_updates__deadline_and_observed_at_equal_to_block_time(
    registry, submit, make_update, chain
):
    now = chain.pending_timestamp
    update = make_update(observed_at=now, deadline=now)

    receipt = submit([update])

    assert receipt.timestamp == now
    assert registry.last_update(MARKET_BTC) == (now, now)


def test_submit_updates__two_markets_in_one_batch(registry, owner, submit, make_update):
    configure(registry, owner, MARKET_ETH)
    btc = make_update(MARKET_BTC, multiplier=2 * WAD, funding_rate=5)
    eth = make_update(MARKET_ETH, multiplier=6 * WAD, funding_rate=-5)

    receipt = submit([btc, eth])

    assert registry.target_multiplier(MARKET_BTC) == 2 * WAD
    assert registry.target_multiplier(MARKET_ETH) == 6 * WAD
    assert registry.funding_rate(MARKET_ETH) == -5
    logs = receipt.decode_logs(registry.RiskUpdated)
    assert [(log.market_id, log.new_multiplier) for log in logs] == [
        (MARKET_BTC, 2 * WAD),
        (MARKET_ETH, 6 * WAD),
    ]
    [batch] = receipt.decode_logs(registry.RiskBatchRelayed)
    assert batch.updates == 2


def test_submit_updates__same_market_twice_in_one_batch(
    registry, submit, make_update, first_update, chain
):
    """Step limits are per update: two updates of one market in a batch (each +50%, with
    rising observed_at) would chain them, from 2x to 4.5x in one transaction."""
    now = chain.pending_timestamp
    up = make_update(multiplier=3 * WAD, observed_at=now - 1)
    up_again = make_update(multiplier=45 * WAD // 10, observed_at=now)  # +50% of 3x

    with ape.reverts("registry: market already updated in this block"):
        submit([up, up_again])

    assert registry.target_multiplier(MARKET_BTC) == FIRST_MULTIPLIER


def test_submit_updates__ten_updates_cannot_climb_from_1x_to_10x(
    registry, submit, make_update, owner, chain
):
    """The audit's proof: one signed batch of rising updates of one market moved it from 1x to
    10x in one transaction. Now the second update reverts the batch."""
    now = chain.pending_timestamp
    submit([make_update(multiplier=WAD, observed_at=now - 100)])
    climb, m = [], WAD
    for i in range(10):
        m = min(m * 3 // 2, 10 * WAD)
        climb.append(make_update(multiplier=m, observed_at=now - 50 + i))

    with ape.reverts("registry: market already updated in this block"):
        submit(climb)
    submit(climb[:1])
    assert registry.target_multiplier(MARKET_BTC) == 3 * WAD // 2


def test_batch_digest__matches_offchain_encoding(registry, make_update, chain):
    updates = [
        make_update(MARKET_BTC, multiplier=3 * WAD, funding_rate=-(10**12)),
        make_update(MARKET_ETH, multiplier=WAD, funding_rate=10**12, model_hash=b"\x01" * 32),
        make_update(99, multiplier=2**64 - 1, funding_rate=-(2**255), deadline=2**256 - 1),
    ]

    for n in (1, 3):
        batch = updates[:n]
        on_chain = registry.batch_digest([u.as_tuple() for u in batch])
        assert bytes(on_chain) == batch_digest(batch, chain.chain_id, registry.address)
    assert registry.batch_digest([updates[0].as_tuple()]) != registry.batch_digest(
        [updates[1].as_tuple()]
    )
