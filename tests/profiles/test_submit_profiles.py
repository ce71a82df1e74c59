"""submit_profiles: an accepted batch is stored, logged and pushed; every refusal, one defect
each; expiry back to the default class."""

import ape
import pytest
from eth_account import Account

from offchain.protocol.signing import batch_digest, sign_batch, to_high_s
from tests.conftest import WAD
from tests.feature_system import (
    MARKET_BTC,
    MODEL_HASH,
    PROFILE_HEARTBEAT,
    profile_update,
)

VOLUME_CLASS, EQUITY_CLASS, PENALTY_CLASS = 1, 2, 3
MIN_VOLUME = 100_000 * WAD  # trailing 30-day traded notional
MIN_EQUITY = 5_000 * WAD


@pytest.fixture
def classes(define):
    define(VOLUME_CLASS, 8 * WAD // 10, min_volume=MIN_VOLUME)
    define(EQUITY_CLASS, 9 * WAD // 10, min_equity=MIN_EQUITY)
    define(PENALTY_CLASS, 2 * WAD)


@pytest.fixture
def traded(system, trader, maker):
    """The trader holds 4,000 USD and has traded 1 BTC (60,000 USD of volume)."""
    system.fund(trader, 4_000)
    system.fund(maker, 1_000_000)
    system.trade(MARKET_BTC, maker, trader, WAD)
    assert system.engine.trailing_volume(trader) == 60_000 * WAD


def test_submit_profiles__stores_logs_and_pushes_into_the_engine(
    profiles, engine, classes, submit, chain, trader, relayer
):
    update = profile_update(chain.pending_timestamp, trader, PENALTY_CLASS, subaccount=3)
    receipt = submit([update])
    landed = receipt.timestamp
    expires = landed + PROFILE_HEARTBEAT

    assert profiles.profile(trader, 3) == (PENALTY_CLASS, update.observed_at, expires)
    [log] = receipt.decode_logs(profiles.ProfileUpdated)
    assert (log.owner, log.subaccount, log.old_class, log.new_class) == (
        trader.address,
        3,
        0,
        PENALTY_CLASS,
    )
    assert (log.observed_at, log.expires_at, log.model_hash) == (
        update.observed_at,
        expires,
        MODEL_HASH,
    )
    [relayed] = receipt.decode_logs(profiles.ProfileBatchRelayed)
    assert relayed.relayer == relayer.address
    assert relayed.digest == batch_digest([update], chain.chain_id, profiles.address)
    assert (relayed.updates, relayed.signers) == (1, 1)
    details = engine.account_details(trader, 3)
    assert (details.class_id, details.class_multiplier, details.class_expires_at) == (
        PENALTY_CLASS,
        2 * WAD,
        expires,
    )
    assert engine.account_details(trader, 0).class_multiplier == WAD  # other subaccounts: 1x


def test_submit_profiles__many_accounts_and_back_to_default(
    profiles, engine, classes, submit, chain, trader, maker, keepers, system, owner
):
    system.registry.set_signer_threshold(2, sender=owner)
    now = chain.pending_timestamp
    updates = [
        profile_update(now, trader, PENALTY_CLASS),
        profile_update(now, maker, PENALTY_CLASS, subaccount=7),
    ]
    assert profiles.batch_digest([u.as_tuple() for u in updates]) == batch_digest(
        updates, chain.chain_id, profiles.address
    )
    receipt = submit(updates, keys=keepers[:2])
    assert receipt.decode_logs(profiles.ProfileBatchRelayed)[0].signers == 2
    assert engine.account_details(maker, 7).class_id == PENALTY_CLASS
    chain.mine(deltatime=60)
    submit([profile_update(chain.pending_timestamp, trader, 0)], keys=keepers[:2])
    assert profiles.profile(trader, 0).class_id == 0
    assert engine.account_details(trader, 0).class_multiplier == WAD


def test_batch_digest__equals_the_signing_module_for_any_batch(profiles, chain, trader):
    now = chain.pending_timestamp
    updates = [
        profile_update(now, trader, 7, subaccount=2**256 - 1, observed_at=0, deadline=2**256 - 1),
        profile_update(now, ape.utils.ZERO_ADDRESS, 0),
    ]
    for batch in (updates[:1], updates):
        assert profiles.batch_digest([u.as_tuple() for u in batch]) == batch_digest(
            batch, chain.chain_id, profiles.address
        )


# Eligibility


def test_submit_profiles__ineligible_by_volume(
    profiles, system, classes, traded, submit, chain, trader, maker
):
    assert not profiles.is_eligible(trader, 0, VOLUME_CLASS)
    with ape.reverts("profiles: account not eligible for the class"):
        submit([profile_update(chain.pending_timestamp, trader, VOLUME_CLASS)])
    # One more round trip of 1 BTC brings the trailing volume to 180,000 USD.
    system.trade(MARKET_BTC, maker, trader, -WAD)
    system.trade(MARKET_BTC, maker, trader, WAD)
    assert system.engine.trailing_volume(trader) == 180_000 * WAD
    assert profiles.is_eligible(trader, 0, VOLUME_CLASS)
    submit([profile_update(chain.pending_timestamp, trader, VOLUME_CLASS)])


def test_submit_profiles__ineligible_by_equity(
    profiles, system, classes, traded, submit, chain, trader
):
    assert system.engine.account_health(trader, 0)[0] == 4_000 * WAD
    with ape.reverts("profiles: account not eligible for the class"):
        submit([profile_update(chain.pending_timestamp, trader, EQUITY_CLASS)])
    # Equity is the subaccount's, marked: a rise of the price can make it eligible.
    system.set_price(MARKET_BTC, 61_000)
    assert system.engine.account_health(trader, 0)[0] == MIN_EQUITY
    submit([profile_update(chain.pending_timestamp, trader, EQUITY_CLASS)])
    assert profiles.profile(trader, 0).class_id == EQUITY_CLASS


def test_submit_profiles__undefined_class(classes, submit, chain, trader):
    with ape.reverts("profiles: class not defined"):
        submit([profile_update(chain.pending_timestamp, trader, 4)])


@pytest.mark.parametrize("class_id", [8, 2**256 - 1])
def test_submit_profiles__class_id_out_of_range(submit, chain, trader, class_id):
    with ape.reverts("profiles: class id must be 0 to 7"):
        submit([profile_update(chain.pending_timestamp, trader, class_id)])


# Signatures


def test_submit_profiles__forged_signature(profiles, classes, submit, chain, trader, keeper):
    honest = profile_update(chain.pending_timestamp, trader, 0)
    signature = sign_batch([honest], keeper.key, chain.chain_id, profiles.address)
    forged = profile_update(chain.pending_timestamp, trader, PENALTY_CLASS)
    with ape.reverts("quorum: signer is not a keeper"):
        submit([forged], signatures=[signature])
    submit([honest], signatures=[signature])


def test_submit_profiles__non_keeper(classes, submit, chain, trader):
    with ape.reverts("quorum: signer is not a keeper"):
        submit(
            [profile_update(chain.pending_timestamp, trader, PENALTY_CLASS)],
            keys=[Account.from_key(b"\x77" * 32)],
        )


def test_submit_profiles__replayed(profiles, classes, submit, chain, trader, keeper):
    update = profile_update(chain.pending_timestamp, trader, PENALTY_CLASS)
    signature = sign_batch([update], keeper.key, chain.chain_id, profiles.address)
    submit([update], signatures=[signature])
    chain.mine(deltatime=60)
    with ape.reverts("profiles: observed_at not after the last update"):
        submit([update], signatures=[signature])


def test_submit_profiles__below_threshold_duplicate_and_high_s(
    profiles, system, classes, submit, chain, trader, keeper, owner
):
    update = profile_update(chain.pending_timestamp, trader, PENALTY_CLASS)
    signature = sign_batch([update], keeper.key, chain.chain_id, profiles.address)
    with ape.reverts("ecdsa: invalid signature `s` value"):
        submit([update], signatures=[to_high_s(signature)])
    system.registry.set_signer_threshold(2, sender=owner)
    with ape.reverts("quorum: not enough signatures"):
        submit([update], signatures=[signature])
    with ape.reverts("quorum: duplicate signer"):
        submit([update], signatures=[signature, signature])


def test_submit_profiles__paused_or_empty(system, profiles, classes, submit, chain, trader, owner):
    with ape.reverts("profiles: empty batch"):
        profiles.submit_profiles([], [], sender=owner)
    system.registry.pause(sender=owner)
    with ape.reverts("quorum: keeper updates paused"):
        submit([profile_update(chain.pending_timestamp, trader, PENALTY_CLASS)])


# Time


def test_submit_profiles__past_deadline(classes, submit, chain, trader):
    now = chain.pending_timestamp
    with ape.reverts("profiles: update past its deadline"):
        submit([profile_update(now, trader, PENALTY_CLASS, deadline=now - 1)])


def test_submit_profiles__observed_in_the_future_or_not_after_the_last(
    classes, submit, chain, trader
):
    now = chain.pending_timestamp
    with ape.reverts("profiles: observed_at in the future"):
        submit([profile_update(now, trader, PENALTY_CLASS, observed_at=now + 1)])
    observed = now - 10
    submit([profile_update(now, trader, PENALTY_CLASS, observed_at=observed)])
    later = chain.pending_timestamp
    with ape.reverts("profiles: observed_at not after the last update"):
        submit([profile_update(later, trader, 0, observed_at=observed)])
    # Another subaccount of the same owner has its own sequence.
    submit([profile_update(later, trader, 0, subaccount=1, observed_at=observed)])


def test_profile__expires_back_to_the_default_class(
    profiles, engine, classes, submit, chain, trader
):
    landed = submit([profile_update(chain.pending_timestamp, trader, PENALTY_CLASS)]).timestamp
    expires = landed + PROFILE_HEARTBEAT
    chain.mine(timestamp=expires)
    assert engine.account_details(trader, 0).class_multiplier == 2 * WAD  # the last second
    chain.mine(timestamp=expires + 1)
    details = engine.account_details(trader, 0)
    assert (details.class_id, details.class_multiplier) == (PENALTY_CLASS, WAD)
    assert profiles.profile(trader, 0).expires_at == expires
    # A new update starts a new heartbeat.
    landed = submit([profile_update(chain.pending_timestamp, trader, PENALTY_CLASS)]).timestamp
    assert engine.account_details(trader, 0).class_expires_at == landed + PROFILE_HEARTBEAT
    assert engine.account_details(trader, 0).class_multiplier == 2 * WAD
